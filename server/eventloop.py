"""The event loop of the control-plane processes.

uvloop: the API server is bound by per-request Python overhead, and uvloop's transports and
scheduling cut it by about a fifth in bench/store (creates/s at concurrency 64). The gateway
keeps the stdlib loop: there the budget is memory, not CPU.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(main)
