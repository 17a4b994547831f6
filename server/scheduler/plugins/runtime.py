"""Filter: the device runs the workload's runtime (docker or micropython)."""

from __future__ import annotations

from collections.abc import Hashable

from ..framework import FEASIBLE, CycleState, FilterResult, unfit
from ..objects import WorkloadInfo
from ..snapshot import NodeInfo


class RuntimeSupported:
    """Reason: ``lack runtime docker``."""

    name = "RuntimeSupported"
    dynamic = False

    def signature(self, workload: WorkloadInfo) -> Hashable:
        return workload.runtime

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        state[self.name] = unfit(f"lack runtime {workload.runtime}")
        return True

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        if workload.runtime in node.device.runtimes:
            return FEASIBLE
        result: FilterResult = state[self.name]
        return result
