"""Filter: memory, flash and cpu requests fit in what the device has left of its allocatable.

Allocatable comes from the device (spec.allocatable, else its capacity) or, failing that,
from its board's hardware profile; what is left subtracts every workload bound (or assumed)
on it.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..framework import FEASIBLE, CycleState, FilterResult, unfit
from ..objects import WorkloadInfo
from ..snapshot import NodeInfo

INSUFFICIENT_MEMORY = "have insufficient memory"
INSUFFICIENT_CPU = "have insufficient cpu"
INSUFFICIENT_FLASH = "have insufficient flash"


class ResourcesFit:
    """Reasons: ``have insufficient memory``, ``have insufficient cpu``, ``have insufficient flash``
    (a device short of several resources counts under each)."""

    name = "ResourcesFit"
    dynamic = True

    def signature(self, workload: WorkloadInfo) -> Hashable:
        return workload.requests

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        return not workload.requests.is_zero()

    def filter_batch(
        self, state: CycleState, workload: WorkloadInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]:
        req = workload.requests
        m, c, f = req.memory, req.cpu_millis, req.flash
        return [
            n
            for n in nodes
            if n.req_memory + m <= n.alloc_memory
            and n.req_cpu + c <= n.alloc_cpu
            and n.req_flash + f <= n.alloc_flash
        ]

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        req = workload.requests
        alloc = node.allocatable
        short_memory = node.req_memory + req.memory > alloc.memory
        short_cpu = node.req_cpu + req.cpu_millis > alloc.cpu_millis
        short_flash = node.req_flash + req.flash > alloc.flash
        if not (short_memory or short_cpu or short_flash):
            return FEASIBLE
        reasons = [
            reason
            for short, reason in (
                (short_memory, INSUFFICIENT_MEMORY),
                (short_cpu, INSUFFICIENT_CPU),
                (short_flash, INSUFFICIENT_FLASH),
            )
            if short
        ]
        return unfit(*reasons)
