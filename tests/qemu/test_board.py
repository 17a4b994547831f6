"""The emulated aarch64 board (qemu-system-aarch64 -M virt, TCG) running fleetlet for real.

1. boot + arm64 CPython + fleetlet pip-installed from the host-built wheelhouse;
2. the board as an SBC device: `fleetlet agent` on the board, with the Docker Engine of the
   board, joins through a gateway on the host and runs a Deployment's container;
3. the board as the site gateway (the Raspberry Pi role): `fleetlet gateway` on the board
   talks upstream to the server on the host; a MicroPython device process on the host
   registers through it and runs an app.

Phase timings go to stdout (-s) and to <cache>/qemu/timings.log; nothing is asserted about
them. Deadlines below only bound a broken run.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.docker import busybox_rootfs_tar
from tests.gateway.harness import eventually
from tests.micropython.fw_harness import Device, build_firmware

from .board import FWD_ADDR
from .conftest import AGENT_COAP, COAP, SERVER_GUEST_PORT, BoardCluster, InstalledBoard, Ports, Timings

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

BOARD_SERVER = f"http://{FWD_ADDR}:{SERVER_GUEST_PORT}"
BUSYBOX = "fleetlet-test/busybox:latest"


def _fleetlet_cli(board: InstalledBoard) -> list[str]:
    """`fleetlet agent` once the CLI registers it, else the module entry point it wraps.

    The global -v makes the CLI print the traceback if the agent dies (shown on failure).
    """
    probe = board.board.run(f"{board.fleetlet} agent --help", check=False, timeout=300)
    if probe.rc == 0:
        return [board.fleetlet, "-v", "agent"]
    return [board.python, "-m", "fleetlet.agent"]


async def _api_get(cluster: BoardCluster, plural: str, name: str, ns: str | None = None) -> dict[str, Any]:
    async with cluster.api() as api:
        obj: dict[str, Any] = await api.get(plural, name, ns)
        return obj


async def _workloads_of(cluster: BoardCluster, deployment: str) -> list[dict[str, Any]]:
    async with cluster.api() as api:
        items: list[dict[str, Any]] = (await api.list("workloads", "default"))["items"]
    return [w for w in items if (w["metadata"].get("labels") or {}).get("app") == deployment]


def _deployment(name: str, template_spec: dict[str, Any], node_selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "placement": {"mode": "Replicas", "replicas": 1},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {**template_spec, "nodeSelector": node_selector},
            },
        },
    }


def _add_device(cluster: BoardCluster, name: str, gateway: str, board: str) -> dict[str, Any]:
    """`fleetlet device add` (labelled qemu-test=<name>, so a nodeSelector can pin a Deployment)."""
    out = cluster.tmp / f"{name}.json"
    cluster.cli(
        "device",
        "add",
        name,
        "--gateway",
        gateway,
        "--board",
        board,
        "--labels",
        f"qemu-test={name}",
        "-o",
        str(out),
    )
    config: dict[str, Any] = json.loads(out.read_text())
    return config


# --- 1 ----------------------------------------------------------------------------------------
def test_board_runs_fleetlet_under_arm64_cpython(
    board: InstalledBoard, cluster: BoardCluster, timings: Timings
) -> None:
    b = board.board
    t0 = time.monotonic()
    assert b.run("uname -m").stdout.strip() == "aarch64"
    info = json.loads(
        b.run(
            [
                board.python,
                "-c",
                "import json,platform,sys; print(json.dumps([platform.machine(), sys.version]))",
            ]
        ).stdout
    )
    assert info[0] == "aarch64" and info[1].startswith("3.11")
    # Installed from the wheelhouse, into the venv, as a user would on a Pi.
    assert "Successfully installed" in board.install_log and "fleetlet-0.1.0" in board.install_log
    where = b.run([board.python, "-c", "import fleetlet.server, sys; print(fleetlet.server.__file__)"]).stdout
    assert where.startswith(f"{board.venv}/lib/python3.11/site-packages/fleetlet/")

    helptext = b.run([board.fleetlet, "--help"], timeout=300).stdout
    for command in ("apply", "get", "gateway", "device", "version"):
        assert command in helptext
    assert b.run([board.fleetlet, "--version"], timeout=300).stdout.strip() == "fleetlet 0.1.0"
    # `fleetlet version` on the board asks the server on the host (TCP guestfwd).
    out = b.run(
        [board.fleetlet, "--server", BOARD_SERVER, "--token", cluster.admin_token, "version"], timeout=300
    ).stdout
    assert "Client Version: 0.1.0" in out and "Server Version" in out, out
    timings.record("case 1", "arm64 checks + fleetlet --help/--version/version", time.monotonic() - t0)


# --- 2 ----------------------------------------------------------------------------------------
@pytest.fixture
def board_dockerd(board: InstalledBoard, timings: Timings) -> Iterator[str]:
    """dockerd on the board: no bridge, no iptables, vfs storage (no overlay module needed).

    DOCKER_RAMDISK=true: the board's root is the initramfs, where pivot_root(2) is refused;
    runc then enters a container's root with MS_MOVE + chroot (as LinuxKit/boot2docker do).
    """
    b = board.board
    t0 = time.monotonic()
    b.run("mkdir -p /var/lib/docker /run/docker")
    pid = b.spawn(
        [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--storage-driver=vfs",
            "--host=unix:///run/docker.sock",
            "--data-root=/var/lib/docker",
        ],
        "dockerd",
        env={"DOCKER_RAMDISK": "true"},
    )
    deadline = time.monotonic() + 600
    while b.run("docker -H unix:///run/docker.sock version", check=False, timeout=120).rc != 0:
        assert b.running(pid), f"dockerd on the board exited:\n{b.log('dockerd')[-3000:]}"
        assert time.monotonic() < deadline, (
            f"dockerd on the board never answered:\n{b.log('dockerd')[-3000:]}"
        )
        time.sleep(2)
    timings.record("case 2", "dockerd start on the board", time.monotonic() - t0)
    t0 = time.monotonic()
    # The arm64 busybox-static of the board, packed by the host's helper, `docker import`ed.
    b.run("cp /bin/busybox /mnt/host/busybox-arm64")
    (b.share / "busybox.tar").write_bytes(busybox_rootfs_tar(str(b.share / "busybox-arm64")))
    b.run(f"docker -H unix:///run/docker.sock import /mnt/host/busybox.tar {BUSYBOX}", timeout=600)
    timings.record("case 2", "docker import busybox (arm64)", time.monotonic() - t0)
    try:
        yield "unix:///run/docker.sock"
    finally:
        b.run(
            "ids=$(docker -H unix:///run/docker.sock ps -aq); "
            '[ -z "$ids" ] || docker -H unix:///run/docker.sock rm -f $ids',
            check=False,
            timeout=600,
        )
        b.terminate(pid, wait=60)


async def test_agent_on_board_joins_host_gateway_and_runs_deployment(
    board: InstalledBoard,
    board_dockerd: str,
    cluster: BoardCluster,
    ports: Ports,
    timings: Timings,
) -> None:
    b = board.board
    gw = "gw-host"
    _, gw_port = cluster.start_gateway(gw, cluster.gateway_token(gw), ports.host_gateway)
    assert gw_port == ports.host_gateway
    config = _add_device(cluster, "qemu-pi", gw, "raspberry-pi-4")
    (b.share / "agent-token").write_text(config["token"])
    (b.share / "agent.yaml").write_text(
        "report_interval: 3\nresync: 1\nstats_interval: 10\nbackoff_initial: 2\n"
    )
    argv = [
        *_fleetlet_cli(board),
        "--config", "/mnt/host/agent.yaml",
        "--device", "qemu-pi",
        "--gateway", f"coap://127.0.0.1:{AGENT_COAP}",  # udp_shim -> guestfwd -> host gateway
        "--token-file", "/mnt/host/agent-token",
        "--docker-host", board_dockerd,
        "--data-dir", "/var/lib/fleetlet-agent",
        "-v",
    ]  # fmt: skip
    t0 = time.monotonic()
    pid = b.spawn(argv, "agent")
    try:

        async def online() -> dict[str, Any] | None:
            status = (await _api_get(cluster, "devices", "qemu-pi")).get("status") or {}
            return status if status.get("phase") == "Online" else None

        status = await eventually(online, "the board's agent registered (Device Online)", timeout=600)
        timings.record("case 2", "agent start -> Device Online", time.monotonic() - t0)
        assert b.running(pid), b.log("agent")[-3000:]
        t0 = time.monotonic()
        spec = {
            "runtime": "docker",
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "hello",
                    "image": BUSYBOX,
                    "command": ["sh", "-c", "echo hello from the arm64 board; exec sleep 3600"],
                }
            ],
        }
        async with cluster.api() as api:
            await api.create(_deployment("board-hello", spec, {"qemu-test": "qemu-pi"}))

        async def running() -> dict[str, Any] | None:
            for w in await _workloads_of(cluster, "board-hello"):
                if (w.get("status") or {}).get("phase") == "Running":
                    return w
            return None

        wl = await eventually(running, "the Deployment's Workload Running on the board", timeout=900)
        timings.record("case 2", "Deployment -> Workload Running (docker)", time.monotonic() - t0)
        assert wl["spec"]["deviceName"] == "qemu-pi"
        uid = wl["metadata"]["uid"]
        ps = b.run(
            "docker -H unix:///run/docker.sock ps --format '{{.Names}} {{.Labels}}'", timeout=300
        ).stdout
        assert uid in ps, ps
        name = next(line.split()[0] for line in ps.splitlines() if uid in line)
        logs = b.run(f"docker -H unix:///run/docker.sock logs {shlex.quote(name)}", timeout=300)
        assert "hello from the arm64 board" in logs.stdout + logs.stderr
        arch = b.run(
            f"docker -H unix:///run/docker.sock exec {shlex.quote(name)} /bin/busybox uname -m", timeout=300
        )
        assert arch.stdout.strip() == "aarch64"
        assert status.get("phase") == "Online"
    except BaseException:
        print(f"--- agent log\n{b.log('agent')[-4000:]}\n--- udp shim\n{b.log(f'udp_shim-{AGENT_COAP}')}")
        raise
    finally:
        b.terminate(pid, wait=60)
        async with cluster.api() as api:
            await api.delete("deployments", "board-hello", "default")


# --- 3 ----------------------------------------------------------------------------------------
APP = """import asyncio
async def main(ctx):
    ctx.log("hello through the board gateway")
    n = 0
    while True:
        n += 1
        ctx.metric("n", n)
        await asyncio.sleep(1)
"""


async def test_board_as_gateway_serves_micropython_device(
    board: InstalledBoard,
    cluster: BoardCluster,
    ports: Ports,
    micropython_bin: str,
    mpy_cross_bin: str,
    tmp_path: Path,
    timings: Timings,
) -> None:
    b = board.board
    gw = "gw-board"
    token = cluster.gateway_token(gw)
    t0 = time.monotonic()
    pid = b.spawn(
        [
            board.fleetlet, "gateway",
            "--name", gw,
            "--server", BOARD_SERVER,  # guestfwd -> fleetlet server on the host
            "--token", token,
            "--listen", f"0.0.0.0:{COAP}",  # host 127.0.0.1:<P>/udp -> udp_shims -> here
            "--data-dir", "/var/lib/fleetlet-gateway",
            "--offline-after", "30",
            "--status-interval", "2",
            "--lease-interval", "2",
            "--log-level", "debug",
        ],
        "gateway",
    )  # fmt: skip
    try:

        async def gateway_ready() -> dict[str, Any] | None:
            obj = await _api_get(cluster, "gateways", gw)
            conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
            return obj if conds.get("Ready") == "True" else None

        await eventually(gateway_ready, "the board's gateway Ready in the API", timeout=600)
        timings.record("case 3", "board gateway start -> Gateway Ready", time.monotonic() - t0)

        t0 = time.monotonic()
        config = _add_device(cluster, "mp-via-board", gw, "esp32-s3")
        config.update(host="127.0.0.1", port=ports.board_gateway, reportInterval=2, ackTimeout=2, backoff=1)
        firmware = build_firmware(mpy_cross_bin, tmp_path / "firmware")
        (tmp_path / "dev").mkdir()
        dev = Device(micropython_bin, firmware, config, tmp_path / "dev", heap="96k")
        dev.start()
        try:

            async def online() -> dict[str, Any] | None:
                status = (await _api_get(cluster, "devices", "mp-via-board")).get("status") or {}
                return status if status.get("phase") == "Online" else None

            dev.wait_for(r"registered as mp-via-board", timeout=300)
            await eventually(online, "the MicroPython device Online through the board", timeout=300)
            timings.record("case 3", "MicroPython device start -> Online", time.monotonic() - t0)

            t0 = time.monotonic()
            spec = {
                "runtime": "micropython",
                "restartPolicy": "Always",
                "app": {"entry": "main", "modules": [{"name": "main.py", "source": APP}]},
            }
            async with cluster.api() as api:
                await api.create(_deployment("board-mp-app", spec, {"qemu-test": "mp-via-board"}))
            dev.wait_for(r"hello through the board gateway", timeout=600)

            async def running() -> dict[str, Any] | None:
                for w in await _workloads_of(cluster, "board-mp-app"):
                    if (w.get("status") or {}).get("phase") == "Running":
                        return w
                return None

            wl = await eventually(running, "the app's Workload Running", timeout=300)
            timings.record("case 3", "Deployment -> app running on the device", time.monotonic() - t0)
            assert wl["spec"]["deviceName"] == "mp-via-board"
            assert wl["spec"]["gatewayName"] == gw
        except BaseException:
            print(f"--- device log\n{dev.log()[-4000:]}")
            raise
        finally:
            dev.kill()
    except BaseException:
        print(f"--- board gateway log\n{b.log('gateway')[-6000:]}")
        raise
    finally:
        b.terminate(pid, wait=60)
