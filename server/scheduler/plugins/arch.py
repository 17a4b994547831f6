"""Filter: one of the image's platforms runs on the device's architecture.

A workload declares its image platforms in the annotation ``fleetlet.io/platforms``
(``linux/arm64,linux/amd64``); no annotation means any architecture. Architectures are
compared normalized (aarch64 = arm64, armhf/armv7 = arm, x86_64 = amd64).
"""

from __future__ import annotations

from collections.abc import Hashable

from ..framework import FEASIBLE, CycleState, FilterResult, unfit
from ..objects import WorkloadInfo
from ..snapshot import NodeInfo

UNKNOWN_ARCH = unfit("have no known architecture")


class ArchitectureMatches:
    """Reasons: ``lack platform linux/arm64`` (alternatives joined by `` or ``),
    ``have no known architecture``."""

    name = "ArchitectureMatches"
    dynamic = False

    def signature(self, workload: WorkloadInfo) -> Hashable:
        return workload.platforms

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        if workload.archs is None:
            return False
        state[self.name] = unfit("lack platform " + " or ".join(workload.platforms))
        return True

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        archs = workload.archs
        arch = node.device.arch
        if archs is None or arch in archs:
            return FEASIBLE
        if not arch:
            return UNKNOWN_ARCH
        result: FilterResult = state[self.name]
        return result
