"""Both device kinds end to end, with a real Docker Engine (the private dockerd fixture):
a MicroPython device running the real firmware and an SBC agent (`python -m fleetlet.agent`)
behind one gateway; and `fleetlet up --docker-host` starting the agent itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from fleetlet.hardware.quantity import parse_bytes
from fleetlet.server.client.errors import ApiError

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


# --- `fleetlet apply -f docker-compose.yml` through server, gateway and agent ------------------


@pytest.fixture
def sbc(tmp_path: Path, fleetlet_bin: str, docker_host: str) -> Iterator[Fleet]:
    """Server, gateway and one SBC agent (`fleetlet agent`, the real CLI) on the private dockerd."""
    fleet = Fleet(tmp_path, fleetlet_bin)
    agent: ServerProcess | None = None
    try:
        fleet.start_server()
        asyncio.run(fleet.gateway_token(GW))
        _, port = fleet.start_gateway(GW)
        dev = asyncio.run(fleet.add_device("sbc-1", GW, port, board="raspberry-pi-4", runtimes=("docker",)))
        (tmp_path / "token").write_text(dev["token"])
        # stats_interval 1: CPU use needs two samples, so it shows in status within seconds.
        (tmp_path / "agent.yaml").write_text(
            yaml.safe_dump({"report_interval": 1, "resync": 0.5, "stats_interval": 1})
        )
        agent = ServerProcess(
            [
                fleetlet_bin,
                "agent",
                "--config",
                str(tmp_path / "agent.yaml"),
                "--device",
                "sbc-1",
                "--gateway",
                f"coap://127.0.0.1:{port}",
                "--token-file",
                str(tmp_path / "token"),
                "--docker-host",
                docker_host,
                "--data-dir",
                str(tmp_path / "sbc-1"),
            ],
            log_dir=tmp_path / "logs",
            name="agent",
        ).start()
        yield fleet
    finally:
        if agent is not None:
            agent.stop()
        fleet.close()
        _remove_fleetlet_containers(docker_host)


COMPOSE = """
services:
  api:
    image: {image}
    # $$ is compose's escape for a literal $: the shell in the container expands $GREETING.
    command:
      - sh
      - -c
      - >-
        mkdir -p /www; echo ok > /www/index.html; echo api $$GREETING;
        exec httpd -f -p 127.0.0.1:{port} -h /www
    environment:
      GREETING: {greeting}
    ports: ["{port}:{port}"]
    mem_limit: 32m
    cpus: 0.25
    restart: on-failure
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{port}/index.html"]
      interval: 1s
      timeout: 1s
      retries: 2
  worker:
    image: {image}
    command: sh -c 'echo worker up; exec sleep 3600'
    restart: on-failure
"""


def _get(url: str) -> bytes:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=10) as resp:
        return bytes(resp.read())


def _stack(client: docker.DockerClient, uid: str) -> dict[str, Any]:
    ctrs = client.containers.list(all=True, filters={"label": f"fleetlet.io/workload-uid={uid}"})
    return {c.labels["fleetlet.io/container"]: c for c in ctrs}


async def test_apply_compose_file_runs_updates_and_deletes_the_stack(
    sbc: Fleet, busybox_image: str, docker_host: str, tmp_path: Path
) -> None:
    fleet = sbc
    port = free_tcp_port()
    folder = tmp_path / "Shop_App"  # compose's project name comes from the folder: "shop-app"
    folder.mkdir()
    compose = folder / "docker-compose.yml"
    compose.write_text(COMPOSE.format(image=busybox_image, port=port, greeting="hello"))

    # Unsupported keys are refused up front, all named, and nothing is created.
    bad = folder / "bad-compose.yml"
    bad.write_text(
        f"services:\n  web:\n    image: {busybox_image}\n    build: .\n    privileged: true\n"
        "    networks: [front]\n"
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        [fleet.fleetlet, "apply", "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **fleet.env},
    )
    assert proc.returncode != 0
    assert 'service "web": unsupported keys: build, networks, privileged' in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr

    out = await asyncio.to_thread(cli, fleet, "apply", "-f", str(compose))
    assert "shop-app" in out

    async def ready_after(generation: int) -> dict[str, Any] | None:
        """The workload once the device runs its current generation (above ``generation``)."""
        async with fleet.api() as api:
            wl = await api.get("workloads", "shop-app", "default")
        st = wl.get("status") or {}
        conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
        current = wl["metadata"]["generation"]
        ok = (
            current > generation
            and st.get("phase") == "Running"
            and st.get("observedGeneration") == current
            and conds.get("Ready") == "True"
        )
        return wl if ok else None

    # (Binding to the device is a spec change too, so the generation is not 1 by then.)
    wl = await eventually(lambda: ready_after(0), "the compose stack Running and Ready", timeout=120)
    uid = wl["metadata"]["uid"]
    assert wl["spec"]["deviceName"] == "sbc-1"
    assert wl["spec"]["restartPolicy"] == "OnFailure"  # restart: on-failure
    api_spec = next(c for c in wl["spec"]["containers"] if c["name"] == "api")
    assert api_spec["livenessProbe"]["exec"]["command"][0] == "wget"  # the healthcheck
    assert "readinessProbe" in api_spec
    # ports: host networking, so the service answers on the host's loopback at its port.
    body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/index.html")
    assert body == b"ok\n"
    client = docker.DockerClient(base_url=docker_host)
    try:
        ctrs = _stack(client, uid)
        assert set(ctrs) == {"api", "worker"}
        api_c = ctrs["api"]
        assert api_c.status == "running" and ctrs["worker"].status == "running"
        assert "GREETING=hello" in api_c.attrs["Config"]["Env"]
        assert api_c.attrs["HostConfig"]["Memory"] == 32 * 1024 * 1024
        assert api_c.attrs["HostConfig"]["NanoCpus"] == 250_000_000
        assert api_c.attrs["HostConfig"]["NetworkMode"] == "host"
        generation = wl["metadata"]["generation"]
        assert api_c.labels["fleetlet.io/generation"] == str(generation)
        first_ids = {c.id for c in ctrs.values()}

        # `fleetlet logs` through the gateway, per container, with --tail.
        text = await asyncio.to_thread(cli, fleet, "logs", "shop-app", "-c", "worker", "--tail", "1")
        assert text == "worker up\n"

        # A changed environment updates the stack as one: both containers are replaced.
        compose.write_text(COMPOSE.format(image=busybox_image, port=port, greeting="bonjour"))
        await asyncio.to_thread(cli, fleet, "apply", "-f", str(compose))
        await eventually(lambda: ready_after(generation), "the new generation Running and Ready", timeout=120)

        async def replaced() -> bool:
            now = await asyncio.to_thread(_stack, client, uid)
            return set(now) == {"api", "worker"} and not ({c.id for c in now.values()} & first_ids)

        await eventually(replaced, "both containers replaced")
        assert "GREETING=bonjour" in _stack(client, uid)["api"].attrs["Config"]["Env"]
        text = await asyncio.to_thread(cli, fleet, "logs", "shop-app", "-c", "api", "--tail", "1")
        assert text == "api bonjour\n"

        # Deleting the compose file's workload removes every container.
        await asyncio.to_thread(cli, fleet, "delete", "-f", str(compose))

        async def gone() -> bool:
            return not await asyncio.to_thread(_stack, client, uid)

        await eventually(gone, "the stack's containers removed", timeout=60)
    finally:
        client.close()


# --- volumes, secret files, network none and usage, through server, gateway and agent ----------

VOLUMES_COMPOSE = """
services:
  api:
    image: {image}
    working_dir: /srv
    network_mode: none
    command: sh -c 'echo api up; exec sleep 3600'
    volumes:
      - cache:/var/cache/shop
      - {host_dir}:/etc/shop:ro
  worker:
    image: {image}
    network_mode: none
    command: sh -c 'echo shared-by-worker > /cache/note; exec sleep 3600'
    volumes:
      - cache:/cache
volumes:
  cache: {{}}
"""


def _exec(container: Any, *argv: str) -> tuple[int, str]:
    code, out = container.exec_run(list(argv))
    return int(code), out.decode(errors="replace")


def _modes(*paths: Path) -> list[int]:
    return [p.stat().st_mode & 0o777 for p in paths]


def _logs_of(folder: Path, prefixes: tuple[str, ...]) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in folder.iterdir() if p.name.startswith(prefixes)}


def _mounts(container: Any) -> dict[str, dict[str, Any]]:
    return {m["Destination"]: m for m in container.attrs["Mounts"]}


async def _running_workload(fleet: Fleet, name: str) -> dict[str, Any]:
    async def running() -> dict[str, Any] | None:
        async with fleet.api() as api:
            wl = await api.get("workloads", name, "default")
        st = wl.get("status") or {}
        ok = st.get("phase") == "Running" and st.get("observedGeneration") == wl["metadata"]["generation"]
        return wl if ok else None

    return await eventually(running, f"workload {name} Running", timeout=120)


async def test_compose_volumes_bind_mount_and_no_network_reach_the_engine(
    sbc: Fleet, busybox_image: str, docker_host: str, tmp_path: Path
) -> None:
    fleet = sbc
    host_dir = tmp_path / "etc-shop"
    host_dir.mkdir()
    (host_dir / "greeting").write_text("hello from the host\n")
    folder = tmp_path / "shop"
    folder.mkdir()
    compose = folder / "docker-compose.yml"
    compose.write_text(VOLUMES_COMPOSE.format(image=busybox_image, host_dir=host_dir))
    await asyncio.to_thread(cli, fleet, "apply", "-f", str(compose))
    wl = await _running_workload(fleet, "shop")
    uid = wl["metadata"]["uid"]
    client = docker.DockerClient(base_url=docker_host)
    try:
        ctrs = _stack(client, uid)
        assert set(ctrs) == {"api", "worker"}
        api_c, worker = ctrs["api"], ctrs["worker"]
        # network_mode none: no network at all, not the host's (the default) and never a bridge.
        assert api_c.attrs["HostConfig"]["NetworkMode"] == "none"
        assert worker.attrs["HostConfig"]["NetworkMode"] == "none"
        assert api_c.attrs["Config"]["WorkingDir"] == "/srv"
        # The bind mount: the host folder, read-only.
        bind = _mounts(api_c)["/etc/shop"]
        assert bind["Type"] == "bind" and bind["Source"] == str(host_dir) and bind["RW"] is False
        assert _exec(api_c, "cat", "/etc/shop/greeting") == (0, "hello from the host\n")
        code, _ = _exec(api_c, "touch", "/etc/shop/x")
        assert code != 0 and not (host_dir / "x").exists()
        # The named volume: one folder shared by both services, writable.
        shared_api, shared_worker = _mounts(api_c)["/var/cache/shop"], _mounts(worker)["/cache"]
        assert shared_api["Source"] == shared_worker["Source"] and shared_api["RW"] is True

        async def note() -> bool:
            return await asyncio.to_thread(_exec, api_c, "cat", "/var/cache/shop/note") == (
                0,
                "shared-by-worker\n",
            )

        await eventually(note, "the worker's note visible to the api container")
    finally:
        client.close()


async def test_secret_files_reach_the_container_and_usage_reaches_the_workload_status(
    sbc: Fleet, busybox_image: str, docker_host: str, tmp_path: Path
) -> None:
    fleet = sbc
    secret_value = "pa55-" + os.urandom(6).hex()
    async with fleet.api() as api:
        # A bridge is refused at admission, naming the annotation.
        bridge = {
            "apiVersion": "fleetlet.io/v1",
            "kind": "Workload",
            "metadata": {"name": "bridged", "annotations": {"fleetlet.io/network-mode": "bridge"}},
            "spec": {"runtime": "docker", "containers": [{"name": "main", "image": busybox_image}]},
        }
        with pytest.raises(ApiError) as refused:
            await api.create(bridge, namespace="default")
        assert refused.value.code == 422
        assert "fleetlet.io/network-mode" in refused.value.message and '"bridge"' in refused.value.message

        await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Secret",
                "metadata": {"name": "vault-creds"},
                "stringData": {"password": secret_value},
            },
            namespace="default",
        )
        await api.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Workload",
                "metadata": {"name": "vault"},
                "spec": {
                    "runtime": "docker",
                    "restartPolicy": "Always",
                    "containers": [
                        {
                            "name": "main",
                            "image": busybox_image,
                            "command": ["sh", "-c", "echo vault up; exec sleep 3600"],
                            "env": [
                                {
                                    "name": "PASSWORD",
                                    "valueFrom": {"secretKeyRef": {"name": "vault-creds", "key": "password"}},
                                }
                            ],
                            "volumeMounts": [{"name": "creds", "mountPath": "/run/secrets/vault"}],
                        },
                        {
                            "name": "sidecar",
                            "image": busybox_image,
                            "command": ["sh", "-c", "exec sleep 3600"],
                        },
                    ],
                    "volumes": [{"name": "creds", "secret": {"secretName": "vault-creds"}}],
                },
            },
            namespace="default",
        )
    wl = await _running_workload(fleet, "vault")
    uid = wl["metadata"]["uid"]
    client = docker.DockerClient(base_url=docker_host)
    try:
        ctrs = _stack(client, uid)
        main = ctrs["main"]
        # Host networking (the default), the secret as a file (read-only, 0600) and as env.
        assert main.attrs["HostConfig"]["NetworkMode"] == "host"
        mount = _mounts(main)["/run/secrets/vault"]
        assert mount["Type"] == "bind" and mount["RW"] is False
        assert _exec(main, "cat", "/run/secrets/vault/password") == (0, secret_value)
        # On the device: a 0700 folder of 0600 files under the agent's data dir.
        source = Path(mount["Source"])
        assert source.is_relative_to(tmp_path / "sbc-1")
        assert _modes(source, source / "password") == [0o700, 0o600]
        assert f"PASSWORD={secret_value}" in main.attrs["Config"]["Env"]
        assert all(secret_value not in v for v in main.labels.values())
    finally:
        client.close()

    async def usage() -> list[dict[str, Any]] | None:
        async with fleet.api() as api:
            got = await api.get("workloads", "vault", "default")
        statuses = (got.get("status") or {}).get("containerStatuses") or []
        ok = {s.get("name") for s in statuses} == {"main", "sidecar"} and all(
            {"cpu", "memory"} <= set(s.get("usage") or {}) for s in statuses
        )
        return statuses if ok else None

    statuses = await eventually(
        usage, "CPU and memory of both containers in the Workload status", timeout=120
    )
    for s in statuses:
        assert s["state"] == "running" and s["ready"] is True
        # Quantities as Kubernetes writes them: "0" or millicores; bytes with a binary suffix.
        assert re.fullmatch(r"0|\d+m", s["usage"]["cpu"]), s
        assert re.fullmatch(r"\d+(\.\d)?(Ki|Mi|Gi)?", s["usage"]["memory"]), s
        assert parse_bytes(s["usage"]["memory"]) > 0, s
    # Never a secret value in what the gateway or the agent logged.
    logs = _logs_of(tmp_path / "logs", ("agent", "gateway"))
    assert {name.split("-")[0] for name in logs} == {"agent", "gateway"}
    assert [name for name, text in logs.items() if secret_value in text] == []
