"""``fleetlet scheduler`` and ``fleetlet controllers``: the control loops on their own."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from ..context import CliState, pass_state
from ..errors import UserError


def _run(state: CliState, scheduler: bool, controllers: bool, log_level: str) -> None:
    from fleetlet.server.control_loops import ControlLoopOptions, run_control_loops

    logging.basicConfig(
        level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = state.config()
    if not cfg.token:
        raise UserError("no token: pass --token, set FLEETLET_TOKEN, or run `fleetlet server` once")

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await run_control_loops(
                cfg.server, cfg.token or "", ControlLoopOptions(scheduler=scheduler, controllers=controllers)
            )
        except asyncio.CancelledError:
            pass

    from fleetlet.server import eventloop

    eventloop.run(main())


LOG_LEVEL = click.option(
    "--log-level", type=click.Choice(("debug", "info", "warning", "error")), default="info", show_default=True
)


@click.command("scheduler")
@LOG_LEVEL
@pass_state
def scheduler_cmd(state: CliState, log_level: str) -> None:
    """Run the scheduler against a server (leader-elected; several may run)."""
    _run(state, scheduler=True, controllers=False, log_level=log_level)


@click.command("controllers")
@LOG_LEVEL
@pass_state
def controllers_cmd(state: CliState, log_level: str) -> None:
    """Run the controllers (deployments, rollouts, node lifecycle, GC) against a server."""
    _run(state, scheduler=False, controllers=True, log_level=log_level)


COMMANDS = [scheduler_cmd, controllers_cmd]
