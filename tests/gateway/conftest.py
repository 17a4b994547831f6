"""Gateway test fixtures: a fresh cluster (server only; tests start gateways) per test.

Modules that share one cluster across their tests define a module-scoped ``cluster`` of their
own with ``running_cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster, running_cluster


@pytest.fixture
def cluster(tmp_path: Path, fleetlet_bin: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path, fleetlet_bin) as c:
        yield c
