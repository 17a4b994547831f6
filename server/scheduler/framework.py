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
from collections.abc import Hashable, Sequence
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
    # False: the verdict depends only on the workload's signature and the device/gateway objects,
    # so it is computed once per (signature, fleet generation) and cached. True: it depends on
    # what is allocated, so it runs in every cycle.
    dynamic: bool

    def signature(self, workload: WorkloadInfo) -> Hashable:
        """What of the workload this filter reads: equal signatures get equal verdicts."""
        ...

    def prefilter(self, state: CycleState, workload: WorkloadInfo) -> bool:
        """Prepare for a cycle; False means this workload does not concern the plugin (skip Filter)."""
        ...

    def filter(self, state: CycleState, workload: WorkloadInfo, node: NodeInfo) -> FilterResult: ...


@runtime_checkable
class BatchFilterPlugin(FilterPlugin, Protocol):
    """A dynamic filter that can also sift many devices in one call (a comprehension), for speed.

    ``filter_batch`` must keep exactly the devices ``filter`` accepts; ``filter`` still gives the
    reasons when nothing fits."""

    def filter_batch(
        self, state: CycleState, workload: WorkloadInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]: ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def prescore(self, state: CycleState, workload: WorkloadInfo, cache: Cache) -> bool:
        """Prepare for scoring; False means every device would score the same (skip)."""
        ...

    def score(self, state: CycleState, workload: WorkloadInfo, nodes: Sequence[NodeInfo]) -> list[float]:
        """A raw score for each of ``nodes`` (one call per cycle: plugins loop in a comprehension)."""
        ...

    def normalize(self, state: CycleState, scores: list[float]) -> None:
        """Rescale ``scores`` in place to 0..MAX_SCORE."""
        ...


def default_normalize(scores: list[float], *, reverse: bool = False) -> None:
    """kube-scheduler's DefaultNormalizeScore: scale by the maximum; reverse so low is good."""
    top = max(scores, default=0)
    if top <= 0:
        if reverse:
            scores[:] = [float(MAX_SCORE)] * len(scores)
        return
    k = MAX_SCORE / top
    scores[:] = [MAX_SCORE - s * k for s in scores] if reverse else [s * k for s in scores]


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


@dataclass(slots=True)
class _StaticVerdict:
    """The devices that pass every static filter for one signature, and why the others do not."""

    generation: int
    nodes: list[NodeInfo]
    reason_counts: dict[str, int]
    failed_plugins: frozenset[str]


class Framework:
    """Runs the filter plugins over the cache's devices, scores the feasible ones, picks one.

    Static filters (readiness, runtime, arch, nodeSelector, taints) depend only on a workload's
    signature and on device/gateway objects: their verdict over the whole fleet is computed once
    per signature and fleet generation (an equivalence cache, as kube-scheduler once had), so a
    cycle runs only the dynamic filter (resources) over devices that can take the workload.
    """

    def __init__(
        self,
        filters: Sequence[FilterPlugin],
        scores: Sequence[WeightedScore],
        *,
        percentage_of_devices_to_score: int | None = None,
        min_feasible: int = MIN_FEASIBLE_DEVICES_TO_FIND,
        rng: random.Random | None = None,
        static_cache_size: int = 512,
    ) -> None:
        self.filters = list(filters)
        # isinstance against a runtime-checkable Protocol walks its members on every call (~4% of
        # the scheduler's CPU when asked per cycle): ask once per plugin.
        self._batch = frozenset(id(p) for p in self.filters if isinstance(p, BatchFilterPlugin))
        self.scores = list(scores)
        self.percentage_of_devices_to_score = percentage_of_devices_to_score
        self.min_feasible = min_feasible
        self._rng = rng or random.Random()
        self._next_start = 0
        self._static: dict[Hashable, _StaticVerdict] = {}
        self._static_cache_size = static_cache_size
        self.static_hits = 0
        self.static_misses = 0

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

    def prepare(self, workload: WorkloadInfo) -> CycleState:
        state = CycleState()
        state["_filters"] = [p for p in self.filters if p.prefilter(state, workload)]
        return state

    def run_filters(
        self, state: CycleState, workload: WorkloadInfo, node: NodeInfo
    ) -> tuple[FilterResult, str]:
        """Every filter on one device (the ones PreFilter kept); the first failure and its plugin."""
        for plugin in state["_filters"]:
            r = plugin.filter(state, workload, node)
            if not r.ok:
                return r, plugin.name
        return FEASIBLE, ""

    @staticmethod
    def _filter_all(
        state: CycleState,
        workload: WorkloadInfo,
        filters: Sequence[FilterPlugin],
        nodes: Sequence[NodeInfo],
        counts: dict[str, int],
        failed: set[str],
    ) -> list[NodeInfo]:
        passed: list[NodeInfo] = []
        for node in nodes:
            for plugin in filters:
                r = plugin.filter(state, workload, node)
                if not r.ok:
                    failed.add(plugin.name)
                    for reason in r.reasons:
                        counts[reason] = counts.get(reason, 0) + 1
                    break
            else:
                passed.append(node)
        return passed

    def static_verdict(self, cache: Cache, state: CycleState, workload: WorkloadInfo) -> _StaticVerdict:
        static = [p for p in state["_filters"] if not p.dynamic]
        key = tuple((p.name, p.signature(workload)) for p in static)
        verdict = self._static.get(key)
        if verdict is not None and verdict.generation == cache.static_generation:
            self.static_hits += 1
            return verdict
        self.static_misses += 1
        counts: dict[str, int] = {}
        failed: set[str] = set()
        passed = self._filter_all(state, workload, static, cache.nodes(), counts, failed)
        verdict = _StaticVerdict(cache.static_generation, passed, counts, frozenset(failed))
        self._static.pop(key, None)
        self._static[key] = verdict
        while len(self._static) > self._static_cache_size:
            del self._static[next(iter(self._static))]
        return verdict

    def find_feasible(
        self, state: CycleState, workload: WorkloadInfo, cache: Cache, result: ScheduleResult
    ) -> list[NodeInfo]:
        """Devices that pass every filter: at most ``feasible_to_find``, starting where the last
        cycle stopped. When none is found, ``result`` has every device's reason."""
        verdict = self.static_verdict(cache, state, workload)
        candidates = verdict.nodes
        total = len(candidates)
        want = self.feasible_to_find(len(cache))
        dynamic = [p for p in state["_filters"] if p.dynamic]
        feasible: list[NodeInfo] = []
        counts: dict[str, int] = {}
        failed: set[str] = set()
        start = self._next_start % total if total else 0
        evaluated = 0
        if not dynamic:
            evaluated = min(want, total)
            feasible = [candidates[(start + i) % total] for i in range(evaluated)]
        elif all(id(p) in self._batch for p in dynamic):
            # Sift the rotation in slices, each dynamic filter over a whole slice at once.
            pos = start
            chunk = max(want, 16)
            while evaluated < total and len(feasible) < want:
                size = min(chunk, total - evaluated)
                end = pos + size
                part = candidates[pos:end] if end <= total else candidates[pos:] + candidates[: end - total]
                for plugin in dynamic:
                    part = plugin.filter_batch(state, workload, part)  # type: ignore[attr-defined]
                need = want - len(feasible)
                if len(part) > need:
                    # Stop right after the last device taken, so the next cycle starts there.
                    last = part[need - 1]
                    part = part[:need]
                    size = next(i for i in range(size) if candidates[(pos + i) % total] is last) + 1
                feasible.extend(part)
                evaluated += size
                pos = (pos + size) % total
            if not feasible:
                self._filter_all(state, workload, dynamic, candidates, counts, failed)
        else:
            idx = start
            for _ in range(total):
                node = candidates[idx]
                idx = idx + 1 if idx + 1 < total else 0
                evaluated += 1
                for plugin in dynamic:
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
        if not feasible:
            merged = dict(verdict.reason_counts)
            for reason, n in counts.items():
                merged[reason] = merged.get(reason, 0) + n
            result.reason_counts = merged
            result.failed_plugins = verdict.failed_plugins | failed
        return feasible

    def score(
        self, state: CycleState, workload: WorkloadInfo, cache: Cache, feasible: list[NodeInfo]
    ) -> list[float]:
        totals = [0.0] * len(feasible)
        for ws in self.scores:
            plugin = ws.plugin
            if not plugin.prescore(state, workload, cache):
                continue
            raw = plugin.score(state, workload, feasible)
            plugin.normalize(state, raw)
            w = ws.weight
            totals = [t + w * s for t, s in zip(totals, raw, strict=True)]
        return totals

    def schedule(self, cache: Cache, workload: WorkloadInfo) -> ScheduleResult:
        """One scheduling cycle: the chosen device, or why none fits."""
        result = ScheduleResult(None)
        if workload.invalid:
            result.summary = f"0/{len(cache)} devices are available: {workload.invalid}."
            result.failed_plugins = frozenset({"Invalid"})
            return result
        state = self.prepare(workload)
        feasible = self.find_feasible(state, workload, cache, result)
        if not feasible:
            result.summary = summarize(len(cache), result.reason_counts)
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
                if seen == 1 or self._rng.randrange(seen) == 0:
                    chosen = i
        result.device = feasible[chosen].name
        return result

    def diagnose(self, cache: Cache, workload: WorkloadInfo, node: NodeInfo) -> FilterResult:
        """Run every filter on one device (tests, and `why not here` checks)."""
        state = self.prepare(workload)
        return self.run_filters(state, workload, node)[0]
