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


_DESCRIPTION = """\
Run the fleetlet SBC agent on this device: register with the gateway over CoAP, run the
workloads the gateway assigns on the local Docker Engine (through the docker SDK), restart
them per restartPolicy with backoff, run their probes, and report their state, exit codes,
restarts and CPU/memory use. Containers keep running when the agent stops; a restarted agent
adopts them without restarting them."""

_EPILOG = """\
examples:
  fleetlet agent --device pi-7 --gateway coap://gw.local:5683 --token-file /etc/fleetlet/token
  fleetlet agent --config /etc/fleetlet/agent.yaml
  # a gateway run with --registry-mirror offers its mirror at registration, and the agent
  # pulls that registry's images through it; a mirror of the agent's own wins:
  fleetlet agent --device pi-7 --gateway coap://gw.local --token-file /etc/fleetlet/token \\
      --registry-mirror gw.local:5001

--config YAML keys (dashes or underscores; flags override them):
  device, gateway, token, board, docker_host, data_dir, registry_mirror, mirror_upstream,
  report_interval, resync, stop_timeout, backoff_initial, backoff_max, stats_interval,
  gc_interval, gc_high, gc_low, gc_measure (disk | images)

The device's credential comes from `fleetlet device add` (or the Device's token). A mirror
that is not plain HTTP on loopback must be listed in dockerd's insecure-registries, or serve TLS.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleetlet agent",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with agent settings (keys below)")
    parser.add_argument("--device", metavar="NAME", help="this device's name, as registered (required)")
    parser.add_argument(
        "--gateway", metavar="URI", help="the gateway's CoAP base URI (default: coap://127.0.0.1:5683)"
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the device's credential (kept off the command line)",
    )
    parser.add_argument(
        "--board", metavar="PROFILE", help="board profile sent at registration (default: raspberry-pi-4)"
    )
    parser.add_argument(
        "--docker-host",
        metavar="URL",
        help="the Docker Engine, e.g. unix:///run/docker.sock (default: DOCKER_HOST, else the local socket)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="state file, secret and emptyDir volumes (default: /var/lib/fleetlet-agent)",
    )
    parser.add_argument(
        "--registry-mirror",
        metavar="HOST:PORT",
        help="a pull-through registry mirror; images of --mirror-upstream are pulled through it "
        "(falling back to the registry itself if the mirror fails). Default: the mirror the "
        "gateway offers at registration, if any",
    )
    parser.add_argument(
        "--mirror-upstream",
        metavar="REGISTRY",
        help="the registry --registry-mirror fronts, as it appears in image names (default: "
        "docker.io; a gateway's offer names its own)",
    )
    parser.add_argument(
        "--gc-high",
        type=float,
        metavar="PERCENT",
        help="image GC starts when the disk holding docker's data is fuller than this (default: 85)",
    )
    parser.add_argument(
        "--gc-low",
        type=float,
        metavar="PERCENT",
        help="image GC removes unused images, oldest first, down to this (default: 80)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    raw: dict[str, Any] = {}
    if args.config:
        import yaml

        try:
            loaded = yaml.safe_load(Path(args.config).read_text())
        except (OSError, yaml.YAMLError) as exc:
            parser.error(f"--config {args.config}: {exc}")
        if loaded is not None and not isinstance(loaded, dict):
            parser.error(f"--config {args.config}: expected a mapping of settings")
        raw = dict(loaded or {})
    for key in (
        "device",
        "gateway",
        "board",
        "docker_host",
        "data_dir",
        "registry_mirror",
        "mirror_upstream",
        "gc_high",
        "gc_low",
    ):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.token_file:
        try:
            raw["token"] = Path(args.token_file).read_text().strip()
        except OSError as exc:
            parser.error(f"--token-file: {exc}")
    if not raw.get("device"):
        parser.error("--device (or device: in --config) is required")
    try:
        config = AgentConfig.from_mapping(raw)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))

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
