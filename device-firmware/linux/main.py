"""`fleetlet agent`: wires the Docker runtime, the reconciler, image GC and the CoAP session.

    fleetlet agent --device pi-7 --gateway coap://gw.local --token-file /etc/fleetlet/token

The CLI team's ``fleetlet agent`` command builds an AgentConfig and calls ``run_agent``;
``python -m fleetlet.agent`` runs the same thing with this module's own argument parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from .imagegc import ImageGC
from .reconciler import Backoff, Reconciler
from .runtime import DockerRuntime
from .state import AgentState

__all__ = ["AgentConfig", "main", "run_agent"]

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    device: str
    gateway: str = "coap://127.0.0.1:5683"
    token: str | None = None
    board: str = "raspberry-pi-4"
    docker_host: str | None = None  # default: DOCKER_HOST or the local socket
    data_dir: str = "/var/lib/fleetlet-agent"
    registry_mirror: str | None = None  # host:port of the gateway's pull-through cache
    mirror_upstream: str = "docker.io"  # the registry that mirror fronts
    report_interval: float = 30.0
    resync: float = 2.0
    stop_timeout: int = 10
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    stats_interval: float = 30.0
    gc_interval: float = 300.0
    gc_high: float = 85.0
    gc_low: float = 80.0
    gc_measure: Literal["disk", "images"] = "disk"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> AgentConfig:
        """From a parsed YAML/TOML config; keys may use dashes. Unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        values = {str(k).replace("-", "_"): v for k, v in raw.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"agent config: unknown keys: {', '.join(unknown)}")
        return cls(**values)


async def run_agent(config: AgentConfig) -> None:
    """Run the agent until cancelled (SIGTERM/SIGINT in ``main``). Containers keep running."""
    from .session import AgentSession, SessionConfig

    data_dir = Path(config.data_dir)
    state = await asyncio.to_thread(AgentState.load, data_dir / "state.json")
    state.boot_count += 1
    await asyncio.to_thread(state.save)
    runtime = DockerRuntime(
        config.docker_host,
        data_dir=data_dir,
        registry_mirror=config.registry_mirror,
        mirror_upstream=config.mirror_upstream,
        stop_timeout=config.stop_timeout,
    )
    reconciler = Reconciler(
        runtime,
        state,
        backoff=Backoff(initial=config.backoff_initial, maximum=config.backoff_max),
        resync=config.resync,
        stats_interval=config.stats_interval,
    )
    session = AgentSession(
        SessionConfig(
            device=config.device,
            gateway=config.gateway,
            token=config.token.encode() if config.token else None,
            board=config.board,
            report_interval=config.report_interval,
        ),
        reconciler,
        boot_count=state.boot_count,
    )
    gc = ImageGC(
        runtime,
        high=config.gc_high,
        low=config.gc_low,
        measure=config.gc_measure,
        protected=lambda: [c.image for spec in reconciler.desired.values() for c in spec.containers],
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(reconciler.run(), name="agent reconciler")
            tg.create_task(session.run(), name="agent session")
            tg.create_task(_gc_loop(gc, config.gc_interval), name="agent image gc")
    finally:
        runtime.close()


async def _gc_loop(gc: ImageGC, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await gc.collect()
        except Exception as exc:  # the engine may be away; try again next round
            log.warning("image GC failed: %s", exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetlet agent", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with agent settings (flags override it)")
    parser.add_argument("--device")
    parser.add_argument("--gateway")
    parser.add_argument("--token-file")
    parser.add_argument("--docker-host")
    parser.add_argument("--data-dir")
    parser.add_argument("--registry-mirror")
    parser.add_argument("--mirror-upstream")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    raw: dict[str, Any] = {}
    if args.config:
        import yaml

        raw = dict(yaml.safe_load(Path(args.config).read_text()) or {})
    for key in ("device", "gateway", "docker_host", "data_dir", "registry_mirror", "mirror_upstream"):
        if getattr(args, key):
            raw[key] = getattr(args, key)
    if args.token_file:
        raw["token"] = Path(args.token_file).read_text().strip()
    if not raw.get("device"):
        parser.error("--device (or device: in --config) is required")
    config = AgentConfig.from_mapping(raw)

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_agent(config)

    asyncio.run(runner())
    return 0
