"""Run the scheduler and the controllers against an API server, in-process or on their own.

`fleetlet server` starts them next to the API by default (the K3s habit: one command, one
process); `fleetlet scheduler` and `fleetlet controllers` run them separately. Either way they
reach the store only through the HTTP API, and Lease-based leader election lets several replicas
run safely: only the leader schedules or reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from .client import ApiClient, SharedInformers
from .controllers.manager import ControllerOptions, run_controllers
from .scheduler.scheduler import Scheduler

log = logging.getLogger("fleetlet.control")


@dataclass
class ControlLoopOptions:
    scheduler: bool = True
    controllers: bool = True
    controller_options: ControllerOptions = field(default_factory=ControllerOptions)


async def run_control_loops(server: str, token: str, options: ControlLoopOptions | None = None) -> None:
    """Run until cancelled. A loop that crashes is logged and restarted after a pause."""
    opts = options or ControlLoopOptions()
    # Room for the watches, the scheduler's binds and a controller's burst of creates at once.
    async with ApiClient(server, token, max_connections=512) as client:
        # One watch per resource for every loop in this process (client-go's shared informers).
        informers = SharedInformers(client)
        loops: list[tuple[str, object]] = []
        if opts.scheduler:
            loops.append(("scheduler", lambda: Scheduler(client, informers=informers).run()))
        if opts.controllers:
            loops.append(("controllers", lambda: run_controllers(client, opts.controller_options, informers)))
        if not loops:
            return
        shared = asyncio.create_task(informers.run(), name="shared-informers")
        try:
            await asyncio.gather(*(_supervise(name, factory) for name, factory in loops))  # type: ignore[arg-type]
        finally:
            shared.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shared


async def _supervise(name: str, factory: object) -> None:
    pause = 1.0
    while True:
        try:
            log.info("%s: starting", name)
            await factory()  # type: ignore[operator]
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: crashed; restarting in %.0f s", name, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)
