"""Filter: the workload's nodeSelector matches the device's labels.

The labels matched are the gateway's labels overlaid by the device's (the device wins on a
conflict), plus the implicit ``fleetlet.io/gateway``, ``fleetlet.io/board`` and
``kubernetes.io/arch``.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..framework import FEASIBLE, CycleState, FilterResult, unfit
from ..objects import WorkloadInfo
from ..snapshot import NodeInfo

MISMATCH = unfit("don't match the nodeSelector")


class NodeSelectorMatches:
    """Reason: ``don't match the nodeSelector``."""

    name = "NodeSelectorMatches"
    dynamic = False

    def signature(self, workload: WorkloadInfo) -> Hashable:
        return workload.node_selector

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        return bool(workload.node_selector)

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        labels = node.labels
        for key, value in workload.node_selector:
            if labels.get(key) != value:
                return MISMATCH
        return FEASIBLE
