"""Container CPU and memory from device reports into Workload status (gateway/report_status.py),
rounded so that usage alone does not write status on every heartbeat; and the Workload schema
that admits it (and refuses a bridge network at admission)."""

from __future__ import annotations

from typing import Any

import pytest
from fleetlet.gateway.report_status import cpu_usage, memory_usage, workload_fields
from fleetlet.gateway.status_sync import StatusSync, object_key
from fleetlet.gateway.wire import ContainerStatus, Report, WorkloadState, WorkloadStatus
from fleetlet.server.api.validation import is_valid, schema_causes

MI = 1 << 20


def _ws(*containers: ContainerStatus, ready: bool | None = None) -> WorkloadStatus:
    return WorkloadStatus("u", 3, WorkloadState.RUNNING, restarts=1, ready=ready, containers=containers)


def _statuses(ws: WorkloadStatus, current: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return list(workload_fields(ws, current or {}, "docker")["containerStatuses"])


def test_each_container_gets_its_status_and_usage_as_quantities() -> None:
    ws = _ws(
        ContainerStatus(
            "api", WorkloadState.RUNNING, restarts=1, exit_code=137, ready=False, cpu=125, memory=34 * MI
        ),
        ContainerStatus("worker", WorkloadState.RUNNING, cpu=0, memory=524288),
        ContainerStatus("init", WorkloadState.STARTING),
    )
    assert _statuses(ws) == [
        {
            "name": "api",
            "state": "running",
            "restarts": 1,
            "ready": False,
            "exitCode": 137,
            "usage": {"cpu": "120m", "memory": "34Mi"},
        },
        {
            "name": "worker",
            "state": "running",
            "restarts": 0,
            "ready": True,
            "usage": {"cpu": "0", "memory": "510Ki"},
        },
        {"name": "init", "state": "starting", "restarts": 0, "ready": False},
    ]


def test_without_container_entries_the_aggregate_entry_stays() -> None:
    # A device (or an older agent) that lists no containers: the workload-level entry as before.
    assert _statuses(_ws()) == [{"state": "running", "restarts": 1, "ready": True}]


@pytest.mark.parametrize(
    ("millicores", "text"),
    [(0, "0"), (4, "4m"), (12, "12m"), (125, "120m"), (999, "1000m"), (1234, "1200m"), (15678, "16000m")],
)
def test_cpu_is_rounded_to_two_significant_figures(millicores: int, text: str) -> None:
    assert cpu_usage(millicores) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0"),
        (500, "500"),
        (524288, "510Ki"),
        (34 * MI + 300_000, "34Mi"),
        (1536 * MI, "1.5Gi"),
        (3 << 40, "3Ti"),
    ],
)
def test_memory_is_rounded_to_two_significant_figures(num_bytes: int, text: str) -> None:
    assert memory_usage(num_bytes) == text


def test_small_changes_keep_the_reported_value_large_ones_replace_it() -> None:
    assert cpu_usage(140, "120m") == "120m"  # within 25 %
    assert cpu_usage(15, "0") == "0"  # within the 20 m floor: an idle container stays idle
    assert cpu_usage(200, "120m") == "200m"
    assert memory_usage(37 * MI, "34Mi") == "34Mi"  # within 10 %
    assert memory_usage(40 * MI, "34Mi") == "40Mi"
    assert memory_usage(MI // 2, "510Ki") == "510Ki"  # within the 1 MiB floor
    assert cpu_usage(50, "garbage") == "50m"  # an unreadable old value is simply replaced


class Writer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.status: dict[str, dict[str, Any]] = {}

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        key = object_key(plural, namespace, name)
        self.calls.append((key, status))
        self.status[key] = {**self.status.get(key, {}), **status}

    def current_status(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.status.get(object_key(plural, namespace, name))


async def test_heartbeats_with_jittering_usage_do_not_write_status() -> None:
    """What the gateway does per report (coap_provider: current status, workload_fields, update):
    a hundred heartbeats whose samples wander within the bands cause one write, the first."""
    writer = Writer()
    now = [0.0]
    sync = StatusSync(writer, None, volatile_interval=0, clock=lambda: now[0])
    key = object_key("workloads", "default", "shop")
    for i in range(100):
        now[0] += 30.0  # a heartbeat: far past the per-object write interval, so any change writes
        jitter = (i * 7919) % 11 - 5  # -5..5, deterministic
        report = Report(
            gen=1,
            workloads=(
                _ws(
                    ContainerStatus(
                        "api", WorkloadState.RUNNING, cpu=118 + jitter * 2, memory=34 * MI + jitter * 200_000
                    ),
                    ContainerStatus(
                        "idle", WorkloadState.RUNNING, cpu=max(0, jitter), memory=300_000 + jitter * 1000
                    ),
                ),
            ),
        )
        current = {**(writer.current_status("workloads", "default", "shop") or {}), **sync.last_known(key)}
        sync.update(key, workload_fields(report.workloads[0], current, "docker"))
        await sync.flush()
    assert len(writer.calls) == 1
    # What the first heartbeat said (cpu 108 m and 0 m; memory 33.05 MiB and 288 KiB) stands.
    assert [c["usage"] for c in writer.status[key]["containerStatuses"]] == [
        {"cpu": "110m", "memory": "33Mi"},
        {"cpu": "0", "memory": "290Ki"},
    ]
    # A real change is written.
    big = _ws(
        ContainerStatus("api", WorkloadState.RUNNING, cpu=600, memory=34 * MI),
        ContainerStatus("idle", WorkloadState.RUNNING, cpu=0, memory=300_000),
    )
    current = {**writer.status[key], **sync.last_known(key)}
    now[0] += 30.0
    sync.update(key, workload_fields(big, current, "docker"))
    await sync.flush()
    assert len(writer.calls) == 2
    assert writer.status[key]["containerStatuses"][0]["usage"]["cpu"] == "600m"


def _workload(
    status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "shop", "namespace": "default"}
    if annotations is not None:
        meta["annotations"] = annotations
    obj: dict[str, Any] = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": meta,
        "spec": {"runtime": "docker", "containers": [{"name": "api", "image": "busybox"}]},
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_the_workload_schema_admits_the_status_the_gateway_writes() -> None:
    ws = _ws(
        ContainerStatus("api", WorkloadState.RUNNING, cpu=125, memory=1536 * MI),
        ContainerStatus("b", WorkloadState.PENDING),
    )
    status = workload_fields(ws, {}, "docker")
    assert is_valid("Workload", _workload(status))
    bad = _workload({"containerStatuses": [{"name": "api", "usage": {"cpu": "lots"}}]})
    assert not is_valid("Workload", bad)
    assert [c["field"] for c in schema_causes("Workload", bad)] == ["status.containerStatuses[0].usage.cpu"]


@pytest.mark.parametrize("mode", ["host", "none"])
def test_host_and_none_network_modes_are_admitted(mode: str) -> None:
    assert is_valid("Workload", _workload(annotations={"fleetlet.io/network-mode": mode, "other": "x"}))


def test_a_bridge_network_is_refused_at_admission_naming_the_annotation() -> None:
    bad = _workload(annotations={"fleetlet.io/network-mode": "bridge"})
    assert not is_valid("Workload", bad)
    (cause,) = schema_causes("Workload", bad)
    assert cause["field"] == "metadata.annotations[fleetlet.io/network-mode]"
    assert cause["message"] == (
        'metadata.annotations[fleetlet.io/network-mode]: Unsupported value: "bridge": '
        'supported values: "host", "none"'
    )
