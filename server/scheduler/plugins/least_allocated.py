"""Score: prefer the device with the most left over after placing the workload (kube's LeastAllocated)."""

from __future__ import annotations

from collections.abc import Sequence

from ..framework import MAX_SCORE, CycleState
from ..objects import WorkloadInfo
from ..snapshot import Cache, NodeInfo


class LeastAllocated:
    """Score 0..100: the mean free fraction of memory, cpu and flash (each the device has)."""

    name = "LeastAllocated"

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        return True

    def score(self, state: CycleState, workload: WorkloadInfo, nodes: Sequence[NodeInfo]) -> list[float]:
        req = workload.requests
        m, c, f = req.memory, req.cpu_millis, req.flash
        # Per device: 100 * mean over its resources of (allocatable - used) / allocatable, where
        # inv_* is 1/allocatable (0 for a resource the device does not have).
        return [
            max(
                MAX_SCORE
                * (
                    n.alloc_dims
                    - (n.req_memory + m) * n.inv_memory
                    - (n.req_cpu + c) * n.inv_cpu
                    - (n.req_flash + f) * n.inv_flash
                )
                / n.alloc_dims,
                0.0,
            )
            if n.alloc_dims
            else 0.0
            for n in nodes
        ]

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        return None
