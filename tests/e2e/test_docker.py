"""Both device kinds end to end, with a real Docker Engine (the private dockerd fixture):
a MicroPython device running the real firmware and an SBC agent (`python -m fleetlet.agent`)
behind one gateway; and `fleetlet up --docker-host` starting the agent itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.fixtures import ServerProcess, free_tcp_port, free_udp_port
from tests.micropython.fw_harness import Device

from .harness import Fleet, deployment, eventually, workloads_of
from .test_fleet import cli
from .test_up import Up, inventory, processes_mentioning

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.micropython]

GW = "gw-both"
APP = """import asyncio
async def main(ctx):
    ctx.log('mpy app up')
    while True:
        await asyncio.sleep(1)
"""


def web_spec(image: str) -> dict[str, Any]:
    return {
        "runtime": "docker",
        "restartPolicy": "Always",
        "containers": [{"name": "main", "image": image, "command": ["sh", "-c", "echo web up; sleep 3600"]}],
    }


@pytest.fixture
def both(
    tmp_path: Path, fleetlet_bin: str, micropython_bin: str, e2e_firmware: Path, docker_host: str
) -> Iterator[tuple[Fleet, Device, ServerProcess]]:
    fleet = Fleet(tmp_path, fleetlet_bin)
    dev: Device | None = None
    agent: ServerProcess | None = None
    try:
        fleet.start_server()
        asyncio.run(fleet.gateway_token(GW))
        _, port = fleet.start_gateway(GW)
        config = asyncio.run(fleet.add_device("mpy-1", GW, port))
        config.update(reportInterval=2, goodAfter=1)
        (tmp_path / "mpy-1").mkdir()
        dev = Device(micropython_bin, e2e_firmware, config, tmp_path / "mpy-1", heap="128k").start()
        sbc = asyncio.run(fleet.add_device("sbc-1", GW, port, board="raspberry-pi-4", runtimes=("docker",)))
        agent_yaml = tmp_path / "agent.yaml"
        agent_yaml.write_text(
            yaml.safe_dump(
                {
                    "device": "sbc-1",
                    "gateway": f"coap://127.0.0.1:{port}",
                    "token": sbc["token"],
                    "docker_host": docker_host,
                    "data_dir": str(tmp_path / "sbc-1"),
                    "report_interval": 2,
                }
            )
        )
        agent = ServerProcess(
            [sys.executable, "-m", "fleetlet.agent", "--config", str(agent_yaml)],
            log_dir=tmp_path / "logs",
            name="agent",
        ).start()
        yield fleet, dev, agent
    finally:
        if agent is not None:
            agent.stop()
        if dev is not None:
            dev.kill()
        fleet.close()
        _remove_fleetlet_containers(docker_host)


def _remove_fleetlet_containers(host: str) -> None:
    client = docker.DockerClient(base_url=host)
    try:
        for c in client.containers.list(all=True, filters={"label": "fleetlet.io/workload-uid"}):
            c.remove(force=True)
    finally:
        client.close()


async def test_both_device_kinds_run_their_workloads(
    both: tuple[Fleet, Device, ServerProcess], busybox_image: str, docker_host: str
) -> None:
    fleet, dev, agent = both
    async with fleet.api() as api:
        await api.create(
            deployment(
                "sensor",
                {
                    "runtime": "micropython",
                    "app": {"entry": "main", "modules": [{"name": "main.py", "source": APP}]},
                },
            )
        )
        await api.create(deployment("web", web_spec(busybox_image)))

    async def all_running() -> list[dict[str, Any]] | None:
        async with fleet.api() as api:
            wls = await workloads_of(api, "sensor") + await workloads_of(api, "web")
        ok = len(wls) == 2 and all((w.get("status") or {}).get("phase") == "Running" for w in wls)
        return wls if ok else None

    wls = await eventually(all_running, "sensor on mpy-1 and web on sbc-1 Running", timeout=120)
    assert {w["spec"]["deviceName"]: w["spec"]["runtime"] for w in wls} == {
        "mpy-1": "micropython",
        "sbc-1": "docker",
    }
    dev.wait_for(r"mpy app up")
    # The container really runs on the engine, labelled with its workload.
    web = next(w for w in wls if w["spec"]["runtime"] == "docker")
    client = docker.DockerClient(base_url=docker_host)
    try:
        running = client.containers.list(
            filters={"label": f"fleetlet.io/workload-uid={web['metadata']['uid']}"}
        )
        assert len(running) == 1 and running[0].status == "running"
        assert b"web up" in running[0].logs()
    finally:
        client.close()
    out = await asyncio.to_thread(cli, fleet, "get", "wl")
    assert len([line for line in out.splitlines() if " Running " in line]) == 2, out
    assert agent.is_running()


def test_up_starts_the_agent_with_docker(
    tmp_path: Path, fleetlet_bin: str, micropython_bin: str, docker_host: str
) -> None:
    data = tmp_path / "fleet"
    home = tmp_path / "home"
    up = Up(fleetlet_bin, data, free_tcp_port(), free_udp_port(), home)
    up.argv = [a for a in up.argv if a != "--no-docker"] + ["--devices", "1", "--docker-host", docker_host]
    up.start()
    try:
        up.wait_ready()
        config = yaml.safe_load((home / "config.yaml").read_text())
        inv = asyncio.run(inventory(config["server"], config["token"]))
        # The sensor app on the MicroPython device and the container example on the SBC agent.
        assert inv["running"] == ["mpy-1", "sbc-1"], inv
        assert "agent    sbc-1" in up.text()
    finally:
        code = up.interrupt()
        _remove_fleetlet_containers(docker_host)
    assert code == 0, up.text()
    assert processes_mentioning(str(data)) == []
