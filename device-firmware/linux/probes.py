"""Liveness and readiness probes: exec (docker exec), httpGet and tcpSocket.

Containers run with host networking, so http and tcp probes go to 127.0.0.1:<port>.
One asyncio task per (container id, start time, probe): a restarted container gets fresh
workers, so initialDelaySeconds applies again after every start, as in the kubelet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from .runtime import DockerRuntime, EngineUnavailable
from .spec import ProbeSpec

__all__ = ["ProbeManager", "ProbeResult", "ProbeTarget", "run_probe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    message: str = ""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    uid: str
    container: str
    cid: str
    started_at: str
    liveness: ProbeSpec | None
    readiness: ProbeSpec | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.cid, self.started_at)


async def run_probe(runtime: DockerRuntime, cid: str, probe: ProbeSpec) -> ProbeResult:
    """One probe attempt, bounded by the probe's timeout."""
    try:
        async with asyncio.timeout(probe.timeout):
            if probe.kind == "exec":
                code, out = await runtime.exec(cid, list(probe.command))
                text = out.decode(errors="replace").strip()[-200:]
                return ProbeResult(code == 0, f"exec {list(probe.command)} exited {code}: {text}")
            if probe.kind == "http":
                url = f"http://127.0.0.1:{probe.port}{probe.path if probe.path.startswith('/') else '/'}"
                # trust_env=False: a proxy from the environment must never see probe traffic.
                async with (
                    aiohttp.ClientSession(trust_env=False) as session,
                    session.get(url, allow_redirects=False) as resp,
                ):
                    ok = 200 <= resp.status < 400
                    return ProbeResult(ok, f"HTTP probe {url} answered {resp.status}")
            _reader, writer = await asyncio.open_connection("127.0.0.1", probe.port)
            writer.close()
            await writer.wait_closed()
            return ProbeResult(True, f"tcp port {probe.port} open")
    except TimeoutError:
        return ProbeResult(False, f"{probe.kind} probe timed out after {probe.timeout:g}s")
    except EngineUnavailable:
        raise
    except (OSError, aiohttp.ClientError) as exc:
        return ProbeResult(False, f"{probe.kind} probe failed: {exc}")
    except Exception as exc:  # docker APIError (container gone, exec refused)
        return ProbeResult(False, f"{probe.kind} probe error: {exc}")


UnhealthyCallback = Callable[[ProbeTarget, str], Awaitable[None]]


class ProbeManager:
    """Keeps one worker per probe of every running container; holds readiness results."""

    def __init__(self, runtime: DockerRuntime, on_unhealthy: UnhealthyCallback) -> None:
        self.runtime = runtime
        self.on_unhealthy = on_unhealthy
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._ready: dict[tuple[str, str], bool] = {}
        self._last_message: dict[tuple[str, str], str] = {}
        self.on_readiness_change: Callable[[], None] | None = None

    def ready(self, cid: str, started_at: str) -> bool:
        return self._ready.get((cid, started_at), False)

    def message(self, cid: str, started_at: str) -> str:
        return self._last_message.get((cid, started_at), "")

    def sync(self, targets: list[ProbeTarget]) -> None:
        """Start workers for new targets, cancel those whose container stopped or changed."""
        wanted: dict[tuple[str, str, str], tuple[ProbeTarget, ProbeSpec]] = {}
        for t in targets:
            if t.liveness is not None:
                wanted[(*t.key, "liveness")] = (t, t.liveness)
            if t.readiness is not None:
                wanted[(*t.key, "readiness")] = (t, t.readiness)
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()
        live_keys = {t.key for t in targets}
        for k in list(self._ready):
            if k not in live_keys:
                del self._ready[k]
                self._last_message.pop(k, None)
        for key, (target, probe) in wanted.items():
            task = self._tasks.get(key)
            if task is None or task.done():
                name = f"probe {key[2]} {target.container} {target.cid[:12]}"
                self._tasks[key] = asyncio.create_task(self._worker(target, probe, key[2]), name=name)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _set_ready(self, key: tuple[str, str], value: bool) -> None:
        if self._ready.get(key) != value:
            self._ready[key] = value
            if self.on_readiness_change is not None:
                self.on_readiness_change()

    async def _worker(self, target: ProbeTarget, probe: ProbeSpec, kind: str) -> None:
        successes = failures = 0
        await asyncio.sleep(probe.initial_delay)
        while True:
            try:
                result = await run_probe(self.runtime, target.cid, probe)
            except EngineUnavailable:
                # The engine is away: no verdict. The reconciler handles the outage.
                await asyncio.sleep(probe.period)
                continue
            if result.ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self._last_message[target.key] = f"{kind} probe failed: {result.message}"
            if kind == "readiness":
                if successes >= probe.success_threshold:
                    self._set_ready(target.key, True)
                elif failures >= probe.failure_threshold:
                    self._set_ready(target.key, False)
            elif failures >= probe.failure_threshold:
                msg = f"liveness probe failed {failures} times: {result.message}"
                log.info("container %s of %s unhealthy: %s", target.container, target.uid, msg)
                # The reconciler kills it; a restarted container gets a new worker.
                # Shielded: a sync() that cancels this worker must not abort the kill halfway.
                await asyncio.shield(self.on_unhealthy(target, msg))
                return
            await asyncio.sleep(probe.period)
