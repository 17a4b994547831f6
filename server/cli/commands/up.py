"""``fleetlet up``: run a whole fleet on this machine until Ctrl-C (see server/up/runner.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from ..errors import UserError


def default_up_dir() -> Path:
    env = os.environ.get("FLEETLET_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "fleetlet-up"


@click.command("up")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State, logs and device flash (default: $FLEETLET_DATA_DIR or ~/.local/share/fleetlet-up).",
)
@click.option(
    "--devices", type=click.IntRange(0, 200), default=5, show_default=True, help="MicroPython devices."
)
@click.option(
    "--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT", help="API address."
)
@click.option(
    "--coap-port", type=click.IntRange(1, 65535), default=5683, show_default=True, help="Gateway UDP port."
)
@click.option(
    "--no-docker", is_flag=True, help="Do not start the SBC agent (container workloads stay Pending)."
)
@click.option(
    "--docker-host", default=None, metavar="URL", help="Docker Engine for the SBC agent (else DOCKER_HOST)."
)
@click.option("--no-examples", is_flag=True, help="Do not apply the manifests in examples/.")
@click.option(
    "--examples-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Manifests to apply (default: ./examples, else the checkout's examples/).",
)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for Running.")
@click.option("--heap", default="128k", show_default=True, help="MicroPython heap per device.")
def up_cmd(
    data_dir: Path | None,
    devices: int,
    listen: str,
    coap_port: int,
    no_docker: bool,
    docker_host: str | None,
    no_examples: bool,
    examples_dir: Path | None,
    timeout: float,
    heap: str,
) -> None:
    """Start the server, a gateway, DEVICES emulated MicroPython boards and (with Docker) the SBC
    agent; apply examples/; show progress; run until Ctrl-C. A second run resumes the same fleet."""
    from rich.console import Console

    from ...up import UpError, UpOptions, run_up

    opts = UpOptions(
        data_dir=(data_dir or default_up_dir()).expanduser().resolve(),
        devices=devices,
        listen=listen,
        coap_port=coap_port,
        docker=not no_docker,
        docker_host=docker_host,
        examples=not no_examples,
        examples_dir=examples_dir,
        timeout=timeout,
        heap=heap,
    )
    try:
        code = asyncio.run(run_up(opts, Console(soft_wrap=not sys.stdout.isatty())))
    except UpError as e:
        raise UserError(str(e)) from None
    if code:
        raise SystemExit(code)


COMMANDS = [up_cmd]
