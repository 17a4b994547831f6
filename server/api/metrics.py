"""Prometheus metrics, in a registry per application (tests run many apps in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StoreCollector(Collector):
    """Reads ``store.stats()`` at scrape time, so the write path pays nothing."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._store.stats()
        yield GaugeMetricFamily("fleetlet_store_revision", "Current store revision", value=s.revision)
        yield GaugeMetricFamily(
            "fleetlet_store_compacted_revision", "Revision compacted up to", value=s.compacted_revision
        )
        yield GaugeMetricFamily("fleetlet_store_objects", "Objects in the store", value=s.objects)
        yield GaugeMetricFamily("fleetlet_store_watchers", "Active store watchers", value=s.watchers)
        yield CounterMetricFamily(
            "fleetlet_store_watchers_cut_off", "Watchers cut off for falling behind", value=s.watchers_cut_off
        )
        yield CounterMetricFamily(
            "fleetlet_store_commits", "Committed transactions (group commits)", value=s.commits
        )
        yield CounterMetricFamily("fleetlet_store_writes", "Committed writes", value=s.writes)
        yield CounterMetricFamily(
            "fleetlet_store_commit_seconds",
            "Time spent committing group commits (divide by commits for the mean)",
            value=s.commit_seconds,
        )
        yield GaugeMetricFamily(
            "fleetlet_store_last_batch_size", "Writes in the last group commit", value=s.last_batch_size
        )
        yield GaugeMetricFamily(
            "fleetlet_store_max_batch_size", "Largest group commit so far", value=s.max_batch_size
        )
        yield GaugeMetricFamily(
            "fleetlet_store_compaction_step_milliseconds",
            "Duration of the last compaction step",
            value=s.last_compaction_step_ms,
        )


class ApiMetrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "fleetlet_apiserver_requests",
            "API requests by verb, resource and HTTP code",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleetlet_apiserver_request_duration_seconds",
            "API request latency (watches excluded)",
            ["verb", "resource"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.watchers = Gauge(
            "fleetlet_apiserver_watchers", "Open watch streams", ["resource"], registry=self.registry
        )
        self.registry.register(_StoreCollector(store))
        # Label children are cached: .labels() takes a lock and builds a tuple on every call.
        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._lat_children: dict[tuple[str, str], Histogram] = {}

    def observe(self, verb: str, resource: str, code: int, seconds: float | None) -> None:
        key = (verb, resource, code)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.requests.labels(verb, resource, str(code))
        child.inc()
        if seconds is not None:
            lkey = (verb, resource)
            hist = self._lat_children.get(lkey)
            if hist is None:
                hist = self._lat_children[lkey] = self.latency.labels(verb, resource)
            hist.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
