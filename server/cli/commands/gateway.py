"""``fleetlet gateway``: run a gateway (the virtual node serving devices over CoAP) in the foreground."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from ...client.config import ClientConfig
from ..context import CliState, pass_state
from ..errors import UserError
from .server import LOG_LEVELS, default_data_dir

DEFAULT_MIRROR_UPSTREAM = "https://registry-1.docker.io"


def parse_labels(text: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict; raises UserError on a malformed pair."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(f'invalid label "{part}": use key=value')
        out[key.strip()] = value.strip()
    return out


@click.command("gateway")
@click.option("--name", required=True, help="Gateway name (the virtual node).")
@click.option("--server", "server_opt", metavar="URL", default=None, help="API server (else config/env).")
@click.option("--token", "token_opt", metavar="TOKEN", default=None, help="Gateway token (else config/env).")
@click.option(
    "--listen", default="127.0.0.1:5683", show_default=True, metavar="HOST:PORT", help="CoAP (UDP)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local state (default: <fleetlet data dir>/gateway-<name>).",
)
@click.option("--labels", default=None, metavar="K=V,...", help="Labels of the Gateway object.")
@click.option(
    "--offline-after", type=float, default=90.0, show_default=True, help="Silent seconds -> Offline."
)
@click.option("--lifetime", type=int, default=3600, show_default=True, help="Registration lifetime (s).")
@click.option(
    "--status-interval",
    type=float,
    default=15.0,
    show_default=True,
    help="Write lastSeen/freeMemory/uptime at most this often per device (s).",
)
@click.option("--max-age", type=int, default=60, show_default=True, help="Max-Age of desired documents (s).")
@click.option(
    "--lease-interval", type=float, default=10.0, show_default=True, help="Lease renewal period (s)."
)
@click.option(
    "--registry-mirror",
    is_flag=False,
    flag_value=DEFAULT_MIRROR_UPSTREAM,
    default=None,
    metavar="[UPSTREAM]",
    help="Run a pull-through cache of registry UPSTREAM (default: Docker Hub) with Debian's "
    "docker-registry, so the devices behind this gateway fetch each image from upstream once. "
    "The gateway offers it to devices when they register, and agents pull through it; an "
    "agent's own --registry-mirror wins.",
)
@click.option(
    "--registry-mirror-listen",
    default="127.0.0.1:5001",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the mirror listens (plain HTTP); use an address the devices reach.",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@pass_state
def gateway_cmd(
    state: CliState,
    name: str,
    server_opt: str | None,
    token_opt: str | None,
    listen: str,
    data_dir: Path | None,
    labels: str | None,
    offline_after: float,
    lifetime: int,
    status_interval: float,
    max_age: int,
    lease_interval: float,
    registry_mirror: str | None,
    registry_mirror_listen: str,
    log_level: str,
) -> None:
    """Run a gateway until Ctrl-C or SIGTERM: CoAP toward devices, the API upstream."""
    from fleetlet.gateway.main import GatewayConfig, parse_listen, run_gateway

    try:
        parse_listen(listen)
    except ValueError as e:
        raise UserError(str(e)) from None
    config = ClientConfig.load(server=server_opt or state.server, token=token_opt or state.token)
    cfg = GatewayConfig(
        name=name,
        server=config.server,
        token=config.token,
        listen=listen,
        data_dir=data_dir or default_data_dir() / f"gateway-{name}",
        labels=parse_labels(labels),
        lifetime=lifetime,
        offline_after=offline_after,
        volatile_interval=status_interval,
        max_age=max_age,
        lease_interval=lease_interval,
        registry_mirror=registry_mirror,
        registry_mirror_listen=registry_mirror_listen,
    )
    logging.basicConfig(
        level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await run_gateway(cfg)
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except OSError as e:
        raise UserError(f"cannot serve CoAP on {listen}: {e.strerror or e}") from None


COMMANDS = [gateway_cmd]
