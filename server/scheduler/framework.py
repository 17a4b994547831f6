"""The scheduling framework: PreFilter/Filter over devices, then Score, as in kube-scheduler.

A plugin is a small class with a ``name``. Filters answer a :class:`FilterResult`; the
reasons of every device that failed are counted into the Kubernetes-style summary
``0/120 devices are available: 80 lack runtime docker, 40 have insufficient memory.``
Scores are normalized to 0..100 per plugin, then weighted and summed.

Like kube-scheduler, a cycle stops filtering once it has found enough feasible devices
(``percentage_of_devices_to_score``, adaptive by default) and starts the next cycle where the
last one stopped, so large fleets are spread over and each cycle stays short.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .objects import WorkloadInfo
from .snapshot import Cache, NodeInfo

MAX_SCORE = 100
MIN_FEASIBLE_DEVICES_TO_FIND = 100
MIN_FEASIBLE_DEVICES_PERCENTAGE_TO_FIND = 5


class CycleState(dict[str, Any]):
    """Per-cycle scratch space that PreFilter/PreScore fill and Filter/Score read."""


@dataclass(frozen=True, slots=True)
class FilterResult:
    """``ok``, or the reason (phrased to follow a count: "lack runtime docker") it is not."""

    ok: bool
    reason: str = ""
    more_reasons: tuple[str, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        if self.ok:
            return ()
        return (self.reason, *self.more_reasons) if self.reason else self.more_reasons


FEASIBLE = FilterResult(True)


def unfit(reason: str, *more: str) -> FilterResult:
    return FilterResult(False, reason, more)


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        """Prepare for a cycle; False means this workload does not concern the plugin (skip Filter)."""
        ...

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult: ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        """Prepare for scoring; False means every device would score the same (skip)."""
        ...

    def score(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> float: ...

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        """Rescale ``scores`` in place to 0..MAX_SCORE."""
        ...


def default_normalize(scores: list[float], *, reverse: bool = False) -> None:
    """kube-scheduler's DefaultNormalizeScore: scale by the maximum; reverse so low is good."""
    top = max(scores, default=0)
    if top <= 0:
        if reverse:
            scores[:] = [MAX_SCORE] * len(scores)
        return
    for i, s in enumerate(scores):
        scaled = MAX_SCORE * s / top
        scores[i] = MAX_SCORE - scaled if reverse else scaled


@dataclass(frozen=True, slots=True)
class WeightedScore:
    plugin: ScorePlugin
    weight: float = 1.0


def summarize(total: int, reason_counts: dict[str, int]) -> str:
    """``0/N devices are available: <count> <reason>, ...`` sorted by count, then reason."""
    if total == 0:
        return "0/0 devices are available: no devices registered."
    if not reason_counts:
        return f"0/{total} devices are available."
    parts = sorted(reason_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"0/{total} devices are available: " + ", ".join(f"{n} {r}" for r, n in parts) + "."


@dataclass(slots=True)
class ScheduleResult:
    device: str | None
    evaluated: int = 0
    feasible: int = 0
    reason_counts: dict[str, int] = field(default_factory=dict)
    failed_plugins: frozenset[str] = frozenset()
    summary: str = ""

    @property
    def ok(self) -> bool:
        return self.device is not None


class Framework:
    """Runs the filter plugins over the cache's devices, scores the feasible ones, picks one."""

    def __init__(
        self,
        filters: Sequence[FilterPlugin],
        scores: Sequence[WeightedScore],
        *,
        percentage_of_devices_to_score: int | None = None,
        min_feasible: int = MIN_FEASIBLE_DEVICES_TO_FIND,
        rng: random.Random | None = None,
    ) -> None:
        self.filters = list(filters)
        self.scores = list(scores)
        self.percentage_of_devices_to_score = percentage_of_devices_to_score
        self.min_feasible = min_feasible
        self._rng = rng or random.Random()
        self._next_start = 0

    def feasible_to_find(self, total: int) -> int:
        """How many feasible devices a cycle looks for (kube's numFeasibleNodesToFind)."""
        if total < self.min_feasible:
            return total
        pct = self.percentage_of_devices_to_score
        if pct is None:
            pct = max(50 - total // 125, MIN_FEASIBLE_DEVICES_PERCENTAGE_TO_FIND)
        if pct >= 100:
            return total
        return max(total * pct // 100, self.min_feasible)

    def run_filters(
        self, state: CycleState, workload: WorkloadInfo, node: NodeInfo
    ) -> tuple[FilterResult, str]:
        """Every filter on one device (the ones PreFilter kept); the first failure and its plugin."""
        for plugin in state["_filters"]:
            r = plugin.filter(state, workload, node)
            if not r.ok:
                return r, plugin.name
        return FEASIBLE, ""

    def prepare(self, workload: WorkloadInfo) -> CycleState:
        state = CycleState()
        state["_filters"] = [p for p in self.filters if p.prefilter(state, workload)]
        return state

    def find_feasible(
        self, state: CycleState, workload: WorkloadInfo, nodes: Sequence[NodeInfo], result: ScheduleResult
    ) -> list[NodeInfo]:
        total = len(nodes)
        want = self.feasible_to_find(total)
        feasible: list[NodeInfo] = []
        counts = result.reason_counts
        failed: set[str] = set()
        filters: list[FilterPlugin] = state["_filters"]
        start = self._next_start % total if total else 0
        evaluated = 0
        for i in range(total):
            node = nodes[(start + i) % total]
            evaluated += 1
            for plugin in filters:
                r = plugin.filter(state, workload, node)
                if not r.ok:
                    failed.add(plugin.name)
                    for reason in r.reasons:
                        counts[reason] = counts.get(reason, 0) + 1
                    break
            else:
                feasible.append(node)
                if len(feasible) >= want:
                    break
        self._next_start = (start + evaluated) % total if total else 0
        result.evaluated = evaluated
        result.feasible = len(feasible)
        result.failed_plugins = frozenset(failed)
        return feasible

    def score(
        self, state: CycleState, workload: WorkloadInfo, cache: Cache, feasible: list[NodeInfo]
    ) -> list[float]:
        totals = [0.0] * len(feasible)
        for ws in self.scores:
            plugin = ws.plugin
            if not plugin.prescore(state, workload, cache):
                continue
            raw = [plugin.score(state, workload, n) for n in feasible]
            plugin.normalize(state, raw)
            w = ws.weight
            for i, s in enumerate(raw):
                totals[i] += w * s
        return totals

    def schedule(self, cache: Cache, workload: WorkloadInfo) -> ScheduleResult:
        """One scheduling cycle: the chosen device, or why none fits."""
        nodes = cache.nodes()
        result = ScheduleResult(None)
        if workload.invalid:
            result.reason_counts = {}
            result.summary = f"0/{len(nodes)} devices are available: {workload.invalid}."
            result.failed_plugins = frozenset({"Invalid"})
            return result
        state = self.prepare(workload)
        feasible = self.find_feasible(state, workload, nodes, result)
        if not feasible:
            result.summary = summarize(len(nodes), result.reason_counts)
            return result
        if len(feasible) == 1:
            result.device = feasible[0].name
            return result
        totals = self.score(state, workload, cache, feasible)
        best = max(totals)
        # Ties: pick uniformly at random among the best (reservoir sampling, as kube does).
        chosen = -1
        seen = 0
        for i, t in enumerate(totals):
            if t == best:
                seen += 1
                if self._rng.randrange(seen) == 0:
                    chosen = i
        result.device = feasible[chosen].name
        return result

    def diagnose(self, cache: Cache, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        """Run every filter on one device (tests, and `why not here` checks)."""
        state = self.prepare(workload)
        return self.run_filters(state, workload, node)[0]
