"""`fleetlet up` as a user runs it: a subprocess on free ports with a private data dir.

It must bring up the server, the gateway and two MicroPython devices, apply examples/,
report everything running, stop cleanly on Ctrl-C (SIGINT) with exit 0 and no process left
behind, and on a second run resume the same fleet without duplicating anything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetlet.server.client import ApiClient

from tests.fixtures import free_tcp_port, free_udp_port

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]

READY = "fleetlet up: everything is running"


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmd and ") Z " not in stat:
            found.append((int(entry.name), cmd))
    return found


class Up:
    def __init__(self, fleetlet: str, data: Path, port: int, coap: int, home: Path) -> None:
        self.argv = [
            fleetlet,
            "up",
            "--data-dir",
            str(data),
            "--devices",
            "2",
            "--no-docker",
            "--listen",
            f"127.0.0.1:{port}",
            "--coap-port",
            str(coap),
            "--timeout",
            "120",
        ]
        self.env = {
            **os.environ,
            "FLEETLET_CONFIG": str(home / "config.yaml"),
            "XDG_CONFIG_HOME": str(home),
            "FLEETLET_SERVER": "",
            "FLEETLET_TOKEN": "",
        }
        self.env.pop("DOCKER_HOST", None)
        self.out = data.parent / "up-out.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Up:
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen(
                self.argv, stdout=f, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL
            )
        return self

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while READY not in self.text():
            assert self.proc.poll() is None, f"fleetlet up exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"fleetlet up not ready:\n{self.text()}"
            time.sleep(0.2)

    def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


async def inventory(server: str, token: str) -> dict[str, Any]:
    async with ApiClient(server, token) as api:
        devices = (await api.list_all("devices"))["items"]
        workloads = (await api.list_all("workloads"))["items"]
        deployments = (await api.list_all("deployments"))["items"]
        tokens = (await api.list_all("tokens"))["items"]
    return {
        "devices": {d["metadata"]["name"]: d["metadata"]["uid"] for d in devices},
        "device_phases": {d["metadata"]["name"]: (d.get("status") or {}).get("phase") for d in devices},
        "workloads": {w["metadata"]["name"]: w["metadata"]["uid"] for w in workloads},
        "running": sorted(
            w["spec"].get("deviceName")
            for w in workloads
            if (w.get("status") or {}).get("phase") == "Running"
        ),
        "deployments": {d["metadata"]["name"]: d["metadata"]["uid"] for d in deployments},
        "tokens": len(tokens),
    }


def test_up_runs_stops_and_resumes(tmp_path: Path, fleetlet_bin: str, micropython_bin: str) -> None:
    data = tmp_path / "fleet"
    home = tmp_path / "home"
    port, coap = free_tcp_port(), free_udp_port()
    up = Up(fleetlet_bin, data, port, coap, home).start()
    try:
        up.wait_ready()
        out = up.text()
        assert "apply    deployment/sensor created" in out and "fleetlet get devices" in out
        assert "stays Pending" in out  # --no-docker: the container workload is announced as waiting
        config = yaml.safe_load((home / "config.yaml").read_text())
        assert config["server"] == f"http://127.0.0.1:{port}"
        first = asyncio.run(inventory(config["server"], config["token"]))
        assert first["device_phases"] == {"mpy-1": "Online", "mpy-2": "Online"}
        assert first["running"] == ["mpy-1", "mpy-2"]  # the sensor app, EveryDevice
        assert set(first["deployments"]) == {"sensor", "web"}
        assert processes_mentioning(str(data))  # children are there while it runs
    finally:
        code = up.interrupt()
    assert code == 0, up.text()
    assert "fleetlet up: stopped" in up.text()
    assert processes_mentioning(str(data)) == []

    # Second run: same data dir, resumes; nothing new is created.
    up2 = Up(fleetlet_bin, data, port, coap, home)
    up2.out = tmp_path / "up-out-2.txt"
    up2.start()
    try:
        up2.wait_ready()
        assert "deployment/sensor unchanged" in up2.text() and "deployment/web unchanged" in up2.text()
        second = asyncio.run(inventory(config["server"], config["token"]))
    finally:
        code = up2.interrupt()
    assert code == 0, up2.text()
    assert processes_mentioning(str(data)) == []
    for key in ("devices", "workloads", "deployments", "tokens"):
        assert second[key] == first[key], key
    assert second["running"] == ["mpy-1", "mpy-2"]
