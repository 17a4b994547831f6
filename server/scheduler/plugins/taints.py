"""Taints of the device and of its gateway against the workload's tolerations.

NoSchedule and NoExecute taints that are not tolerated filter the device out; untolerated
PreferNoSchedule taints only lower its score.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from ..framework import FEASIBLE, CycleState, FilterResult, default_normalize, unfit
from ..objects import NO_EXECUTE, NO_SCHEDULE, Taint, Toleration, WorkloadInfo
from ..snapshot import Cache, NodeInfo

_HARD = (NO_SCHEDULE, NO_EXECUTE)


def tolerated(taint: Taint, tolerations: tuple[Toleration, ...]) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def first_untolerated(taints: tuple[Taint, ...], tolerations: tuple[Toleration, ...]) -> Taint | None:
    for taint in taints:
        if taint.effect in _HARD and not tolerated(taint, tolerations):
            return taint
    return None


def device_taint_reason(taint: Taint) -> str:
    return f"have untolerated taint {taint}"


def gateway_taint_reason(taint: Taint) -> str:
    return f"have a gateway with untolerated taint {taint}"


class TaintToleration:
    """Filter reasons: ``have untolerated taint key=value:NoSchedule`` and
    ``have a gateway with untolerated taint key=value:NoSchedule``.
    Score: fewer untolerated PreferNoSchedule taints (device + gateway) is better."""

    name = "TaintToleration"
    dynamic = False

    def signature(self, workload: WorkloadInfo) -> Hashable:
        return workload.tolerations

    # -- filter -------------------------------------------------------------------------
    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        return True

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        device_taints = node.device.taints
        if device_taints:
            taint = first_untolerated(device_taints, workload.tolerations)
            if taint is not None:
                return unfit(device_taint_reason(taint))
        gateway = node.gateway
        if gateway is not None and gateway.taints:
            taint = first_untolerated(gateway.taints, workload.tolerations)
            if taint is not None:
                return unfit(gateway_taint_reason(taint))
        return FEASIBLE

    # -- score --------------------------------------------------------------------------
    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        return cache.prefer_tainted_devices > 0  # no PreferNoSchedule taint anywhere: all equal

    def score(self, state: CycleState, workload: WorkloadInfo, nodes: Sequence[NodeInfo]) -> list[float]:
        tolerations = workload.tolerations
        return [
            float(sum(1 for t in n.prefer_taints if not tolerated(t, tolerations)))
            if n.prefer_taints
            else 0.0
            for n in nodes
        ]

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        default_normalize(scores, reverse=True)
