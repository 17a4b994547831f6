"""Run the scheduler on its own: ``python -m fleetlet.server.scheduler`` (``fleetlet scheduler``).

Inside ``fleetlet server`` it runs through :func:`embedded_startup` (an ``extra_startup`` hook
of ``run_server``), talking to its own API over loopback like any other client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from fleetlet.server import eventloop
from fleetlet.server.client import ApiClient, ClientConfig

from .scheduler import Scheduler

log = logging.getLogger("fleetlet.scheduler")


async def run_scheduler(
    server: str | None = None,
    token: str | None = None,
    *,
    name: str = "fleetlet-scheduler",
    leader_election: bool = True,
    **kwargs: Any,
) -> None:
    """Connect with the usual client config (flags > env > config file) and schedule until cancelled."""
    config = ClientConfig.load(server=server, token=token)
    async with ApiClient.from_config(config) as client:
        scheduler = Scheduler(client, name=name, leader_election=leader_election, **kwargs)
        await scheduler.run()


def embedded_startup(token: str, url: str, **kwargs: Any) -> Callable[[Any], Awaitable[None]]:
    """An ``extra_startup`` hook for ``run_server``: start the scheduler as a task of the server."""

    async def start(app: Any) -> None:
        client = ApiClient(url, token)
        scheduler = Scheduler(client, **kwargs)
        task = asyncio.create_task(scheduler.run(), name="fleetlet-scheduler")

        async def stop(_: Any) -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()

        app.on_shutdown.append(stop)

    return start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fleetlet scheduler", description=__doc__)
    parser.add_argument("--server", help="API server URL (default: $FLEETLET_SERVER or the CLI config)")
    parser.add_argument("--token", help="bearer token (default: $FLEETLET_TOKEN or the CLI config)")
    parser.add_argument("--name", default="fleetlet-scheduler", help="lease name shared by the replicas")
    parser.add_argument("--no-leader-elect", action="store_true", help="no lease: run one replica only")
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format=fmt)

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_scheduler(
                args.server,
                args.token,
                name=args.name,
                leader_election=not args.no_leader_elect,
                lease_duration=args.lease_duration,
            )

    eventloop.run(serve())
