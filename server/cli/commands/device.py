"""``fleetlet device add``: create a Device with a per-device credential and print its config."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ...client.resources import API_VERSION
from ..context import CliState, pass_state
from ..errors import UserError
from .gateway import parse_labels

if TYPE_CHECKING:
    from ...client.api import ApiClient

DEFAULT_COAP = "127.0.0.1:5683"


def new_credential() -> str:
    """A device credential: sent as its UTF-8 bytes in the hello (key 7); the server keeps its sha256."""
    return "fdc_" + secrets.token_urlsafe(24)


def coap_address(gateway: dict[str, Any] | None) -> str:
    for addr in ((gateway or {}).get("status") or {}).get("addresses") or []:
        if isinstance(addr, dict) and addr.get("type") == "CoAP" and addr.get("address"):
            return str(addr["address"])
    return DEFAULT_COAP


@click.group("device")
def device_group() -> None:
    """Manage devices."""


@device_group.command("add")
@click.argument("name")
@click.option("--gateway", required=True, help="The gateway that serves this device.")
@click.option("--board", required=True, help="Board profile (hardware/*.toml), e.g. esp32-s3.")
@click.option("--labels", default=None, metavar="K=V,...", help="Device labels.")
@click.option(
    "--coap", "coap", default=None, metavar="HOST:PORT", help="Gateway CoAP address for the config."
)
@click.option("--report-interval", type=int, default=30, show_default=True, help="Seconds between reports.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the device config to this file (mode 0600) instead of printing it.",
)
@pass_state
def device_add(
    state: CliState,
    name: str,
    gateway: str,
    board: str,
    labels: str | None,
    coap: str | None,
    report_interval: int,
    output: Path | None,
) -> None:
    """Create device NAME on GATEWAY and print the config to put on the device (shown once)."""
    token = new_credential()
    body = {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": {"name": name, "labels": parse_labels(labels)},
        "spec": {
            "gateway": gateway,
            "board": board,
            "credentialHash": hashlib.sha256(token.encode()).hexdigest(),
        },
    }

    async def go(api: ApiClient) -> tuple[dict[str, Any], dict[str, Any] | None]:
        from ...client.errors import ApiError

        created = await api.create(body)
        try:
            gw: dict[str, Any] | None = await api.get("gateways", gateway)
        except ApiError:
            gw = None
        return created, gw

    _, gw = state.run(go)
    address = coap or coap_address(gw)
    host, _, port = address.rpartition(":")
    config = {
        "device": name,
        "gateway": gateway,
        "coap": f"coap://{address}",
        "host": host,
        "port": int(port) if port.isdigit() else 5683,
        "token": token,
        "board": board,
        "reportInterval": report_interval,
    }
    text = json.dumps(config, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    click.echo(f"device/{name} created; config written to {output}", err=True)


COMMANDS = [device_group]
