"""`fleetlet logs` end to end: real `fleetlet server` and `fleetlet gateway` processes, the CLI as
a subprocess, and the lines coming from a device.

- MicroPython-style device (the CPython simulator speaking the real wire codec): it POSTs a log
  batch to ``/d/<dev>/logs``; the gateway keeps it in its ring buffer and answers through the
  tunnel.
- SBC agent (`python -m fleetlet.agent`, real Docker Engine): the gateway asks the agent for a
  fresh tail over CoAP (``GET /l``) at the address it registered from.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiocoap.numbers.codes import Code
from fleetlet.gateway.wire import LogBatch, LogClock, LogLine, LogStream, Runtime

from tests.fixtures import ServerProcess

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload, running_cluster

pytestmark = pytest.mark.e2e

GW = "gw-logs"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("logs"), fleetlet_bin) as c:
        yield c


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> tuple[ServerProcess, int]:
    return cluster.start_gateway(GW, cluster.gateway_token(GW))


def logs(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.fleetlet, "logs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **cluster.env},
    )


async def logs_ok(cluster: Cluster, *args: str, expect: str | None = None) -> str:
    """stdout of a successful `fleetlet logs` (retried until the gateway's tunnel is open and,
    when ``expect`` is given, until that is the output)."""

    async def attempt() -> str | None:
        proc = await asyncio.to_thread(logs, cluster, *args)
        if proc.returncode != 0 or (expect is not None and proc.stdout != expect):
            raise AssertionError(f"exit {proc.returncode}: {proc.stdout!r} {proc.stderr!r}")
        return proc.stdout or " "

    out = await eventually(attempt, f"fleetlet logs {' '.join(args)}", timeout=60)
    return "" if out == " " else out


async def bind(cluster: Cluster, workload: dict[str, Any], device: str) -> dict[str, Any]:
    async with cluster.api() as api:
        created = await api.create(workload)
        await api.bind("default", workload["metadata"]["name"], device)
    return created


async def test_micropython_lines_pushed_to_the_gateway(
    cluster: Cluster, gateway: tuple[ServerProcess, int]
) -> None:
    _, port = gateway
    config = cluster.add_device("mpy-logs", GW)
    created = await bind(cluster, micropython_workload("blinky"), "mpy-logs")
    uid = created["metadata"]["uid"]
    async with DeviceSim("mpy-logs", config["token"], port) as dev:

        async def registered() -> bool:
            return (await dev.register()).code == Code.CREATED

        await eventually(registered, "mpy-logs registered")
        # Device uptime clock, as a MicroPython board without NTP sends it.
        batch = LogBatch(
            uid=uid,
            lines=(
                LogLine(61_000, LogStream.STDOUT, "boot"),
                LogLine(62_000, LogStream.STDOUT, "tick 1"),
                LogLine(63_500, LogStream.STDERR, "tick 2"),
            ),
            clock=LogClock.UPTIME_MS,
        )
        resp = await dev.request(Code.POST, "/d/mpy-logs/logs", batch.to_cbor())
        assert resp.code == Code.CHANGED, resp

        assert await logs_ok(cluster, "blinky", "--tail", "2") == "tick 1\ntick 2\n"
        assert await logs_ok(cluster, "blinky") == "boot\ntick 1\ntick 2\n"
        stamped = (await logs_ok(cluster, "blinky", "--timestamps", "-n", "default")).splitlines()
        matches = [STAMP.match(line) for line in stamped]
        assert all(matches), stamped
        texts = [m.group(2) for m in matches if m]
        assert texts == ["boot", "tick 1", "tick 2"]
        times = [datetime.fromisoformat(m.group(1).replace("Z", "+00:00")) for m in matches if m]
        # Uptime stamps become wall-clock times with the device's spacing kept.
        assert [round((b - a).total_seconds() * 1000) for a, b in itertools.pairwise(times)] == [
            1000,
            1500,
        ]

        more = LogBatch(
            uid=uid, lines=(LogLine(64_000, LogStream.STDOUT, "tick 3"),), clock=LogClock.UPTIME_MS
        )
        assert (await dev.request(Code.POST, "/d/mpy-logs/logs", more.to_cbor())).code == Code.CHANGED
        assert await logs_ok(cluster, "blinky", "--tail", "1", expect="tick 3\n") == "tick 3\n"


async def test_errors_are_one_line(cluster: Cluster, gateway: tuple[ServerProcess, int]) -> None:
    async with cluster.api() as api:
        await api.create(micropython_workload("lonely"))
    proc = await asyncio.to_thread(logs, cluster, "lonely")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "Error from server (NotFound): workload lonely is not bound to a device yet\n"

    ghost = await asyncio.to_thread(logs, cluster, "ghost")
    assert ghost.returncode == 1 and ghost.stderr.startswith("Error from server (NotFound): ")

    # A device behind a gateway that never connected.
    cluster.add_device("far-away", "gw-absent")
    await bind(cluster, micropython_workload("stranded"), "far-away")
    proc = await asyncio.to_thread(logs, cluster, "stranded")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        'Error from server (ServiceUnavailable): gateway "gw-absent" is not connected'
    ), proc.stderr


@pytest.mark.docker
async def test_docker_agent_answers_a_fresh_tail(
    cluster: Cluster,
    gateway: tuple[ServerProcess, int],
    docker_host: str,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    _, port = gateway
    config = cluster.add_device("sbc-logs", GW, board="raspberry-pi-4")
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(
        yaml.safe_dump(
            {
                "device": "sbc-logs",
                "gateway": f"coap://127.0.0.1:{port}",
                "token": config["token"],
                "docker_host": docker_host,
                "data_dir": str(tmp_path / "sbc-logs"),
                "report_interval": 2,
            }
        )
    )
    agent = ServerProcess(
        [sys.executable, "-m", "fleetlet.agent", "--config", str(agent_yaml)],
        log_dir=tmp_path / "logs",
        name="agent",
    ).start()
    script = "for i in 1 2 3 4; do echo docker line $i; done; exec sleep 3600"
    wl = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "web-logs", "namespace": "default"},
        "spec": {
            "runtime": "docker",
            "restartPolicy": "Always",
            "containers": [{"name": "main", "image": busybox_image, "command": ["sh", "-c", script]}],
        },
    }
    try:
        wl_uid = (await bind(cluster, wl, "sbc-logs"))["metadata"]["uid"]

        async def running() -> bool:
            async with cluster.api() as api:
                obj = await api.get("workloads", "web-logs", "default")
            return (obj.get("status") or {}).get("phase") == "Running"

        await eventually(running, "web-logs Running on the agent", timeout=120)
        # The agent never pushed these lines: they come fresh from the engine through the agent.
        expect = "docker line 3\ndocker line 4\n"
        assert await logs_ok(cluster, "web-logs", "--tail", "2", expect=expect) == expect
        assert await logs_ok(cluster, "web-logs", "-c", "main", expect=None) == (
            "docker line 1\ndocker line 2\n" + expect
        )
        bad = await asyncio.to_thread(logs, cluster, "web-logs", "-c", "nope")
        assert bad.returncode == 1 and "container nope is not valid" in bad.stderr

        # The agent goes away; the device (same credential) speaks from another address with no
        # logs endpoint and pushes a batch: the gateway falls back to the lines it keeps.
        agent.stop()
        async with DeviceSim("sbc-logs", config["token"], port) as dev:
            dev_hello: dict[str, Any] = {"board": "raspberry-pi-4", "runtimes": (Runtime.DOCKER,)}
            assert (await dev.register(**dev_hello)).code == Code.CREATED
            batch = LogBatch(
                uid=wl_uid, container="main", lines=(LogLine(1_764_169_200_000, LogStream.STDOUT, "kept"),)
            )
            assert (await dev.request(Code.POST, "/d/sbc-logs/logs", batch.to_cbor())).code == Code.CHANGED
            assert await logs_ok(cluster, "web-logs", expect="kept\n") == "kept\n"
    finally:
        agent.stop()
        _remove_fleetlet_containers(docker_host)


def _remove_fleetlet_containers(host: str) -> None:
    import docker

    client = docker.DockerClient(base_url=host)
    try:
        for c in client.containers.list(all=True, filters={"label": "fleetlet.io/workload-uid"}):
            c.remove(force=True)
    finally:
        client.close()
