"""The event loop and garbage-collector settings of the control-plane processes.

uvloop: the API server is bound by per-request Python overhead, and uvloop's transports and
scheduling cut it by about a fifth in bench/store (creates/s at concurrency 64).

GC thresholds: these processes hold the fleet in memory (the store's objects, informer caches,
the scheduler's snapshot), hundreds of thousands of tracked objects, and allocate fast. With
CPython's default (700, 10, 10) requests' short-lived objects got promoted to the oldest
generation within milliseconds and set off a full collection every few seconds: in
bench/scheduler at 10,000 devices that was ~3 s of GC in a 27 s run, in each of the server and
the scheduler. A young generation of 50,000 lets those objects die young; full collections
stop during the run. Cyclic garbage (rare here: the objects are JSON trees) lives a little longer.

The gateway keeps the stdlib loop and defaults: there the budget is memory, not CPU.
"""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

GC_THRESHOLDS = (50_000, 20, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    gc.set_threshold(*GC_THRESHOLDS)
    return uvloop.run(main)
