"""``fleetlet server``: run the API server (with its store) in the foreground."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import click

from ..errors import UserError

LOG_LEVELS = ("debug", "info", "warning", "error")


def default_data_dir() -> Path:
    env = os.environ.get("FLEETLET_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "fleetlet"


def load_run_server() -> Any:
    # Imported lazily: the rest of the CLI must start fast and work without the server's deps.
    try:
        module = importlib.import_module("fleetlet.server.api.main")
    except ModuleNotFoundError as e:
        if e.name in ("fleetlet.server.api", "fleetlet.server.api.main"):
            raise UserError(
                "the API server is not part of this installation (module fleetlet.server.api.main is missing)"
            ) from None
        raise UserError(f"the API server cannot start: missing module {e.name!r}") from None
    return module.run_server


@click.command("server")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder (default: $FLEETLET_DATA_DIR or ~/.local/share/fleetlet).",
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve the API on.",
)
@click.option(
    "--database",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL, e.g. postgresql+psycopg://... (default: SQLite in the data dir).",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Run the scheduler in this process (or run `fleetlet scheduler` separately).",
)
@click.option(
    "--controllers/--no-controllers",
    default=True,
    show_default=True,
    help="Run the controllers in this process (or run `fleetlet controllers` separately).",
)
def server_cmd(
    data_dir: Path | None,
    listen: str,
    database: str | None,
    log_level: str,
    scheduler: bool,
    controllers: bool,
) -> None:
    """Run the API server (store, API, auth), with the scheduler and controllers, until Ctrl-C or SIGTERM."""
    run_server = load_run_server()
    data_dir = data_dir or default_data_dir()
    logging.basicConfig(
        level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # SIGTERM (systemd, docker stop, tests) shuts down as cleanly as Ctrl-C.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        loops: list[asyncio.Task[None]] = []

        async def start_loops(app: Any) -> None:
            if not (scheduler or controllers):
                return
            from fleetlet.server.control_loops import ControlLoopOptions, run_control_loops

            # They talk to this server over loopback HTTP like any other client (only the API
            # touches the store), with the admin credential written at first start.
            token = (data_dir / "admin.token").read_text().strip()
            host, _, port = listen.rpartition(":")
            if host in ("", "0.0.0.0", "::", "[::]"):
                host = "127.0.0.1"
            opts = ControlLoopOptions(scheduler=scheduler, controllers=controllers)
            loops.append(asyncio.create_task(run_control_loops(f"http://{host}:{port}", token, opts)))

        try:
            await run_server(data_dir, listen=listen, database=database, extra_startup=start_loops)
        except asyncio.CancelledError:
            pass
        finally:
            for t in loops:
                t.cancel()
            for t in loops:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass

    try:
        from fleetlet.server import eventloop

        eventloop.run(serve())
    except KeyboardInterrupt:
        pass
    except OSError as e:
        raise UserError(f"cannot serve on {listen}: {e.strerror or e}") from None


COMMANDS = [server_cmd]
