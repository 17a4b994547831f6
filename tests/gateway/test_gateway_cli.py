"""`fleetlet gateway` and `fleetlet device add` as a user runs them (the installed console script).

- ``fleetlet gateway --name GW [--server URL --token T | config] [--listen] [--data-dir]``: the
  help names every flag of the interface; bad flags are refused; with no --server/--token the
  gateway takes both from the CLI config file, serves CoAP where --listen says and keeps its
  state in --data-dir.
- ``fleetlet device add NAME --gateway GW --board B`` prints the device config (or writes it,
  mode 0600, with -o); the Device holds only the credential's SHA-256, the config points at the
  gateway's CoAP address, and a device using it registers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from aiocoap.numbers.codes import Code

from tests.fixtures import ServerProcess, free_udp_port

from .devsim import DeviceSim
from .harness import Cluster, coap_answers, eventually

pytestmark = pytest.mark.e2e


def run(fleetlet: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [fleetlet, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_gateway_help_names_the_interface(fleetlet_bin: str) -> None:
    proc = run(fleetlet_bin, "gateway", "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for flag in ("--name", "--server", "--token", "--listen", "--data-dir"):
        assert flag in text, flag
    assert "127.0.0.1:5683" in text  # the default --listen


def test_gateway_refuses_bad_flags(fleetlet_bin: str, tmp_path: Path) -> None:
    missing = run(fleetlet_bin, "gateway", "--server", "http://127.0.0.1:1", "--token", "t")
    assert missing.returncode == 2 and "--name" in missing.stderr
    bad = run(
        fleetlet_bin,
        "gateway",
        "--name",
        "g",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--listen",
        "127.0.0.1:notaport",
        "--data-dir",
        str(tmp_path / "d"),
    )
    assert bad.returncode == 1
    assert bad.stderr == "error: invalid listen address '127.0.0.1:notaport': expected host:port\n"
    assert not (tmp_path / "d").exists()  # refused before touching anything


async def test_gateway_from_config_and_device_add_printing_its_config(
    cluster: Cluster, tmp_path: Path
) -> None:
    gw = "gw-cfg"
    config = tmp_path / "gateway-config.yaml"
    config.write_text(yaml.safe_dump({"server": cluster.url, "token": cluster.gateway_token(gw)}))
    port = free_udp_port()
    data = tmp_path / "gw-data"
    proc = ServerProcess(
        [cluster.fleetlet, "gateway", "--name", gw, "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
        extra_env={"FLEETLET_CONFIG": str(config), "FLEETLET_SERVER": "", "FLEETLET_TOKEN": ""},
        log_dir=tmp_path / "logs",
        name="gateway-from-config",
    )
    proc.start()
    cluster.gateways.append(proc)  # stopped with the cluster

    async def serving() -> bool:
        assert proc.is_running(), proc.log_tail()
        return await asyncio.to_thread(coap_answers, port)

    await eventually(serving, "the gateway's CoAP port")
    assert (data / "gateway.db").exists()

    async def registered() -> dict[str, object] | None:
        async with cluster.api() as api:
            status: dict[str, object] = (await api.get("gateways", gw)).get("status") or {}
        return status if status.get("addresses") else None

    status = await eventually(registered, "the Gateway object, registered with the config's token")
    assert {"type": "CoAP", "address": f"127.0.0.1:{port}"} in status["addresses"]  # type: ignore[operator]

    # `fleetlet device add` without -o prints the config to put on the device.
    out = cluster.cli("device", "add", "printed", "--gateway", gw, "--board", "esp32-s3")
    printed = json.loads(out)
    assert printed["device"] == "printed" and printed["gateway"] == gw and printed["board"] == "esp32-s3"
    assert (printed["host"], printed["port"]) == ("127.0.0.1", port)
    assert printed["coap"] == f"coap://127.0.0.1:{port}"
    token = printed["token"]
    async with cluster.api() as api:
        device = await api.get("devices", "printed")
    assert device["spec"]["gateway"] == gw
    assert device["spec"]["credentialHash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(device)  # the server never holds the credential itself

    # With -o it goes to a file (0600), and stdout stays clean.
    written = tmp_path / "w.json"
    add = ("device", "add", "written", "--gateway", gw, "--board", "esp32-s3")
    quiet = cluster.cli(*add, "-o", str(written))
    assert quiet == ""
    assert written.stat().st_mode & 0o777 == 0o600
    assert json.loads(written.read_text())["device"] == "written"

    # The printed config is enough for a device to register.
    async with DeviceSim(printed["device"], token, printed["port"], host=printed["host"]) as dev:

        async def created() -> bool:
            return bool((await dev.register()).code == Code.CREATED)

        await eventually(created, "registration with the printed config")
    assert proc.is_running()
