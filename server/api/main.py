"""Entry point for ``fleetlet server``: open the store, bootstrap the admin token, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ..auth.bootstrap import ensure_admin
from ..store import Store
from .app import DEFAULT_MAX_BODY, ApiRunner, create_app
from .state import STATE
from .validation import warm_validators

log = logging.getLogger("fleetlet.api")

StartupHook = Callable[[web.Application], Awaitable[None]]

__all__ = ["STATE", "create_app", "parse_listen", "run_server"]


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``port`` -> (host, port)."""
    text = listen.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    else:
        host, port = "", text
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid listen address {listen!r}: expected host:port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid listen address {listen!r}: port out of range")
    return host or "127.0.0.1", number


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _client_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"  # listening everywhere: the local CLI talks to loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def run_server(
    data_dir: Path,
    listen: str = "127.0.0.1:8080",
    database: str | None = None,
    *,
    ready_event: asyncio.Event | None = None,
    extra_startup: StartupHook | None = None,
    config_path: Path | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Serve the API until cancelled, SIGTERM or SIGINT; then stop accepting, end watches, close the store.

    ``database=None`` means ``sqlite:///<data_dir>/fleetlet.db``. ``extra_startup(app)`` runs after the
    API is up and before ``ready_event`` is set (``app[STATE].store`` is the open store).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    host, port = parse_listen(listen)
    url = database or f"sqlite:///{data_dir / 'fleetlet.db'}"
    store = await Store.open(url)
    runner: ApiRunner | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        app = create_app(store, max_body=max_body)
        runner = ApiRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        # Bind first, write the admin credential and CLI config, and only then accept: whoever
        # sees /healthz answer can rely on admin.token and the config file being there.
        sock = _bind(host, port)
        actual_port = sock.getsockname()[1]
        await ensure_admin(store, data_dir, _client_url(host, actual_port), config_path)
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        warming = loop.run_in_executor(None, warm_validators)
        log.info(
            "fleetlet API server listening on http://%s:%d (backend %s, data dir %s)",
            host,
            actual_port,
            store.dialect,
            data_dir,
        )
        if extra_startup is not None:
            await extra_startup(app)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        if ready_event is not None:
            ready_event.set()
        await stop.wait()
        log.info("fleetlet API server stopping")
        await warming
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if runner is not None:
            app_state = runner.app[STATE] if runner.app is not None else None
            if app_state is not None:
                app_state.shutting_down = True
            await runner.cleanup()  # stop accepting, end watch streams, finish in-flight requests
        await store.close()
        log.info("fleetlet API server stopped")
