"""Tables per kind, ages, and describe text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fleetlet.server.cli.printers import columns_for, describe_text, human_duration, render_table, table_rows
from fleetlet.server.client import REGISTRY

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(kind: str, items: list[dict[str, Any]], wide: bool = False, all_ns: bool = False) -> list[str]:
    cols = columns_for(REGISTRY.resolve(kind), wide=wide, all_namespaces=all_ns)
    lines, _ = render_table([c.header for c in cols], table_rows(cols, items, NOW))
    return lines


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (800 * 86400, "2y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_workload_table() -> None:
    items: list[dict[str, Any]] = [
        {
            "metadata": {
                "name": "web",
                "namespace": "default",
                "creationTimestamp": ts(timedelta(minutes=5)),
            },
            "spec": {"runtime": "docker", "deviceName": "pi-1", "gatewayName": "gw-a"},
            "status": {"phase": "Running", "restarts": 2},
        },
        {
            "metadata": {
                "name": "sensor-long-name",
                "namespace": "lab",
                "creationTimestamp": ts(timedelta(hours=2)),
                "deletionTimestamp": ts(timedelta(0)),
            },
            "spec": {"runtime": "micropython"},
        },
    ]
    lines = render("wl", items, all_ns=True)
    assert lines[0].split() == ["NAMESPACE", "NAME", "STATUS", "DEVICE", "GATEWAY", "RESTARTS", "AGE"]
    assert lines[1].split() == ["default", "web", "Running", "pi-1", "gw-a", "2", "5m"]
    assert lines[2].split() == ["lab", "sensor-long-name", "Terminating", "<none>", "<none>", "0", "120m"]
    # Columns line up: every column starts where its header starts.
    start = lines[0].index("STATUS")
    assert lines[1][start:].startswith("Running") and lines[2][start:].startswith("Terminating")
    assert all(line == line.rstrip() for line in lines)


def test_device_table() -> None:
    items: list[dict[str, Any]] = [
        {
            "metadata": {"name": "pi-1", "creationTimestamp": ts(timedelta(days=3))},
            "spec": {"gateway": "gw-a", "board": "raspberry-pi-4", "arch": "arm64", "runtimes": ["docker"]},
            "status": {"phase": "Online", "lastSeen": ts(timedelta(seconds=4))},
        },
        {"metadata": {"name": "esp"}, "spec": {"gateway": "gw-a", "board": "esp32-s3"}},
    ]
    lines = render("devices", items, wide=True)
    assert re.split(r"\s{2,}", lines[0])[:6] == ["NAME", "GATEWAY", "BOARD", "PHASE", "LAST SEEN", "AGE"]
    assert lines[1].split() == [
        "pi-1",
        "gw-a",
        "raspberry-pi-4",
        "Online",
        "4s",
        "3d",
        "arm64",
        "docker",
        "<none>",
    ]
    assert lines[2].split()[3:5] == ["Unknown", "<never>"]


def test_gateway_and_deployment_tables() -> None:
    gw = {
        "metadata": {"name": "gw-a"},
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "deviceCount": 3},
    }
    assert render("gw", [gw])[1].split() == ["gw-a", "Ready,SchedulingDisabled", "3", "<none>"]
    dep = {
        "metadata": {"name": "web"},
        "spec": {"placement": {"mode": "Replicas", "replicas": 4}},
        "status": {"readyReplicas": 3, "updatedReplicas": 4},
    }
    lines = render("deploy", [dep])
    assert lines[0].split() == ["NAME", "MODE", "READY", "UP-TO-DATE", "AGE"]
    assert lines[1].split() == ["web", "Replicas", "3/4", "4", "<none>"]


def test_generic_table_and_markup_is_literal() -> None:
    lines = render("cm", [{"metadata": {"name": "[bold]x[/bold]"}, "data": {"a": "1", "b": "2"}}])
    assert lines[1].split() == ["[bold]x[/bold]", "2", "<none>"]


def test_min_widths_keep_later_rows_aligned() -> None:
    _, widths = render_table(["NAME", "AGE"], [["a-long-name", "1s"]])
    lines, _ = render_table(["NAME", "AGE"], [["b", "2s"]], widths)
    assert lines[1].index("2s") == len("a-long-name") + 3


def test_describe_includes_conditions_and_events() -> None:
    wl = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "creationTimestamp": ts(timedelta(minutes=3)),
            "uid": "u-1",
        },
        "spec": {
            "runtime": "micropython",
            "app": {
                "entry": "main",
                "modules": [
                    {"name": "main.py", "source": "import asyncio\nasync def main(ctx):\n    pass\n"}
                ],
            },
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Scheduled", "status": "True", "reason": "Bound", "message": "bound to pi-1"}
            ],
        },
    }
    events = [
        {
            "type": "Warning",
            "reason": "BackOff",
            "message": "restarting",
            "count": 3,
            "lastTimestamp": ts(timedelta(seconds=30)),
            "source": {"component": "gateway"},
        }
    ]
    text = describe_text(REGISTRY.resolve("wl"), wl, events, NOW)
    assert "Name:             web" in text
    assert "Labels:           app=web" in text
    assert "Annotations:      <none>" in text
    assert "  runtime:  micropython" in text
    assert "import asyncio ... (3 lines)" in text
    assert "Status:\n  phase:  Running" in text
    assert any(line.split()[:3] == ["Scheduled", "True", "Bound"] for line in text.splitlines())
    event_line = next(line for line in text.splitlines() if "BackOff" in line)
    assert event_line.split() == ["Warning", "BackOff", "30s", "(x3)", "gateway", "restarting"]
    assert describe_text(REGISTRY.resolve("wl"), wl, [], NOW).endswith("Events:           <none>")
