"""``fleetlet gateway``: wire the local store, provider, CoAP server and upstream together.

    await run_gateway(GatewayConfig(name="gw1", server="http://127.0.0.1:8080", token="flt_..."))

The CoAP side starts first, from the local store, so devices are served even when the API
server is down; the upstream connects (and reconnects) on its own.

This module imports asyncio only inside its functions: :func:`main` decides first whether the
process needs the ``ssl`` module at all (see :func:`_block_ssl_unless_needed`) and keeps
OpenSSL's hashes out (:func:`_use_builtin_hashes`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("fleetlet.gateway")


@dataclass
class GatewayConfig:
    name: str
    server: str
    token: str | None
    listen: str = "127.0.0.1:5683"
    data_dir: Path = Path("/var/lib/fleetlet-gateway")
    labels: dict[str, str] = field(default_factory=dict)
    lifetime: int = 3600  # registration lifetime, seconds
    offline_after: float = 90.0  # silent this long: Offline (3 x a 30 s report interval)
    volatile_interval: float = 15.0  # lastSeen/freeMemory/uptime written at most this often
    flush_interval: float = 1.0
    max_age: int = 60  # Max-Age of the desired document, the poll hint for sleepy devices
    refresh_interval: float = 60.0  # re-read referenced Secrets/ConfigMaps
    lease_interval: float = 10.0
    registry_mirror: str | None = None  # upstream registry URL, or None for no mirror
    registry_mirror_listen: str = "127.0.0.1:5001"


def parse_listen(listen: str) -> tuple[str, int]:
    text = listen.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid listen address {listen!r}: expected host:port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid listen address {listen!r}: port out of range")
    return host or "127.0.0.1", number


def _block_ssl_unless_needed(server: str) -> bool:
    """Keep the ``ssl`` module (~4.5 MB of RSS: asyncio imports it, and with it OpenSSL) out of a
    gateway whose API server is plain ``http://``: nothing else in the lean gateway process uses
    TLS (CoAP is plain UDP until OSCORE, which does not use ssl either). asyncio copes with a
    missing ssl module. Must run before asyncio is imported; answers whether ssl is blocked.
    An ``https://`` server keeps ssl, and gateway/apiclient.py verifies the server with it."""
    scheme = server.strip().partition("://")[0].lower() if "://" in server else "http"
    if scheme == "https" or "asyncio" in sys.modules or sys.modules.get("ssl") is not None:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
    return True


def _use_builtin_hashes() -> bool:
    """Make hashlib use CPython's own SHA-256 (and the rest) instead of OpenSSL's: ``_hashlib``
    maps libcrypto, ~3 MB of RSS, for the gateway's few small hashes (document hashes, ETags,
    blob digests, credentials). Must run before hashlib is imported; answers whether it did.
    An https:// API server brings libcrypto back with ssl, which needs it anyway."""
    if "hashlib" in sys.modules or sys.modules.get("_hashlib") is not None:
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # hashlib falls back to _sha256...
    return True


async def _every(seconds: float, fn: Any) -> None:
    import asyncio

    while True:
        await asyncio.sleep(seconds)
        try:
            result = fn()
            if asyncio.iscoroutine(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic task %s failed", getattr(fn, "__name__", fn))


async def run_gateway(cfg: GatewayConfig, *, ready: asyncio.Event | None = None) -> None:
    import asyncio

    from .apiclient import ApiClient
    from .coap_provider import CoapDeviceProvider
    from .coap_server import GatewaySite, start_server
    from .devices import DeviceTable
    from .localstore import LocalStore
    from .logbuffer import LogBuffer
    from .status_sync import StatusSync
    from .tunnel import LogTunnel
    from .upstream import Upstream

    host, port = parse_listen(cfg.listen)
    cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await LocalStore.open(cfg.data_dir / "gateway.db")
    api = ApiClient(cfg.server, cfg.token, timeout=15.0, connect_timeout=5.0)
    upstream = Upstream(
        api,
        store,
        cfg.name,
        labels=cfg.labels,
        coap_address=f"{host}:{port}",
        lease_interval=cfg.lease_interval,
    )
    status = StatusSync(
        upstream, store, flush_interval=cfg.flush_interval, volatile_interval=cfg.volatile_interval
    )
    devices = DeviceTable(lifetime=cfg.lifetime, offline_after=cfg.offline_after)
    provider = CoapDeviceProvider(store, status, upstream, devices=devices, events=upstream)
    mirror: Any = None
    ctx: Any = None
    logbuf = LogBuffer()
    try:
        await provider.load()
        await status.load()
        site = GatewaySite(provider, max_age=cfg.max_age, log_sink=logbuf.add)
        provider.on_doc_changed = site.devices.notify
        upstream.attach(provider, status)
        ctx = await start_server(site, host, port)
        tunnel = LogTunnel(api, cfg.name, logbuf, peers=site.peers, coap=lambda: ctx)
        log.info(
            "gateway %s: CoAP on %s:%d, API %s, data in %s", cfg.name, host, port, cfg.server, cfg.data_dir
        )
        if cfg.registry_mirror:
            from .registry_mirror import RegistryMirror

            mirror = RegistryMirror(
                cfg.registry_mirror, cfg.data_dir / "registry-mirror", cfg.registry_mirror_listen
            )
            await mirror.start()
            log.info("registry mirror of %s on %s", cfg.registry_mirror, cfg.registry_mirror_listen)
            # Offered to every device at registration, at the address it registered to.
            site.registration.mirror_offer = functools.partial(mirror.offer_for, coap_host=host)
        if ready is not None:
            ready.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(upstream.run())
            tg.create_task(tunnel.run())
            tg.create_task(status.run())
            tg.create_task(_every(1.0, provider.sweep))
            tg.create_task(_every(cfg.refresh_interval, provider.refresh_refs))
    finally:
        with contextlib.suppress(Exception):
            await status.save_all()
        if mirror is not None:
            with contextlib.suppress(Exception):
                await mirror.stop()
        if ctx is not None:
            with contextlib.suppress(Exception):
                await ctx.shutdown()
        await api.close()
        await store.close()
        log.info("gateway %s stopped", cfg.name)


def main(argv: list[str] | None = None) -> None:
    """``python -m fleetlet.gateway.main --name GW --server URL --token T ...``: the gateway without
    the CLI stack (click, rich), so the process stays small (`fleetlet up`, bench/rollout.py)."""
    import argparse

    p = argparse.ArgumentParser(prog="fleetlet-gateway")
    p.add_argument("--name", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--listen", default="127.0.0.1:5683")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--offline-after", type=float, default=90.0)
    p.add_argument("--status-interval", type=float, default=15.0)
    p.add_argument("--lease-interval", type=float, default=10.0)
    p.add_argument("--log-level", default="info")
    p.add_argument("--registry-mirror", metavar="UPSTREAM", help="run a pull-through cache of this registry")
    p.add_argument("--registry-mirror-listen", metavar="HOST:PORT", default="127.0.0.1:5001")
    a = p.parse_args(argv)
    _block_ssl_unless_needed(a.server)
    _use_builtin_hashes()
    import asyncio
    import signal

    cfg = GatewayConfig(
        name=a.name,
        server=a.server,
        token=a.token,
        listen=a.listen,
        data_dir=a.data_dir,
        offline_after=a.offline_after,
        volatile_interval=a.status_interval,
        lease_interval=a.lease_interval,
        registry_mirror=a.registry_mirror,
        registry_mirror_listen=a.registry_mirror_listen,
    )
    logging.basicConfig(
        level=getattr(logging, a.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_gateway(cfg)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
