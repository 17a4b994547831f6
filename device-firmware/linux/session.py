"""The CoAP side of `fleetlet agent`: the same wire protocol as the MicroPython firmware.

- ``POST /rd?ep=<device>`` with a CBOR hello (board, version, arch, runtimes, memory, boot
  count, credential); renewed before the registration lifetime runs out.
- ``GET /d/<device>/desired`` with Observe; when the observation ends or the gateway does not
  support it, polling with the ETag (2.03 Valid: nothing changed).
- ``POST /d/<device>/report``: on every reportable change (coalesced) and every
  ``report_interval`` seconds as a heartbeat. Each workload's status lists its containers with
  their CPU (millicores) and memory (bytes) use; the gateway maps them into the Workload's
  ``status.containerStatuses[].usage``. (They used to go into ``metrics`` as
  ``<workload>/<container>/cpu_pct``, which the gateway could not tie to a workload.)
- Logs on demand: the agent serves ``GET /l?uid=<uid>&c=<container>&n=<lines>`` on the same
  UDP socket it uses as a client (so a gateway reaches it through NAT at the address it
  registered from) and answers a CBOR log batch; ``push_logs()`` POSTs one to
  ``/d/<device>/logs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

import aiocoap
import aiocoap.resource
from aiocoap.numbers import ContentFormat
from fleetlet.gateway.wire import (
    DesiredDoc,
    DockerWorkload,
    Hello,
    LogBatch,
    LogLine,
    LogStream,
    Registered,
    Report,
    Runtime,
    WireError,
)

from .reconciler import Reconciler
from .spec import SpecError, WorkloadSpec, from_wire

__all__ = ["AgentSession", "SessionConfig", "mem_info"]

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


@dataclass
class SessionConfig:
    device: str
    gateway: str = "coap://127.0.0.1:5683"  # base URI of the gateway
    token: bytes | None = None
    board: str = "raspberry-pi-4"
    report_interval: float = 30.0
    poll_interval: float = 30.0  # ETag polling when Observe is unavailable
    retry: float = 5.0  # after a failed exchange
    bind: tuple[str, int] | None = None  # local UDP address for requests and the logs resource


def mem_info() -> tuple[int, int]:
    """(available, total) bytes from /proc/meminfo."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return (0, 0)
    return (values.get("MemAvailable", 0), values.get("MemTotal", 0))


class _LogsResource(aiocoap.resource.Resource):  # type: ignore[misc]  # aiocoap is untyped
    def __init__(self, session: AgentSession) -> None:
        super().__init__()
        self.session = session

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        query: dict[str, list[str]] = {}
        for q in request.opt.uri_query:
            for k, v in parse_qs(q, keep_blank_values=True).items():
                query.setdefault(k, []).extend(v)
        uid = (query.get("uid") or [""])[0]
        container = (query.get("c") or [""])[0]
        try:
            tail = int((query.get("n") or ["100"])[0])
        except ValueError:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"n must be a number")
        if not uid or not container:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"uid and c are required")
        batch = await self.session.log_batch(uid, container, max(1, min(tail, 1000)))
        if batch is None:
            return aiocoap.Message(code=aiocoap.NOT_FOUND, payload=b"no such workload or container")
        return aiocoap.Message(payload=batch.to_cbor(), content_format=ContentFormat.CBOR)


class AgentSession:
    def __init__(self, config: SessionConfig, reconciler: Reconciler, *, boot_count: int = 0) -> None:
        self.config = config
        self.reconciler = reconciler
        self.boot_count = boot_count
        self.base = config.gateway.rstrip("/")
        self.ctx: aiocoap.Context | None = None
        self.registered: Registered | None = None
        self.desired_gen = 0
        self.desired_etag: bytes | None = None
        self.reports_sent = 0
        self.last_error = ""
        self._report_now = asyncio.Event()
        self._started = time.monotonic()
        self.on_desired: Callable[[DesiredDoc], None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Register, then observe desired state and send reports until cancelled."""
        site = aiocoap.resource.Site()
        site.add_resource(["l"], _LogsResource(self))
        self.ctx = await aiocoap.Context.create_server_context(site, bind=self.config.bind or ("0.0.0.0", 0))
        self.reconciler.on_change = self.report_soon
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._registration_loop(), name="agent registration")
                tg.create_task(self._desired_loop(), name="agent desired")
                tg.create_task(self._report_loop(), name="agent reports")
        finally:
            ctx, self.ctx = self.ctx, None
            await ctx.shutdown()

    def report_soon(self) -> None:
        self._report_now.set()

    # ------------------------------------------------------------ registration

    def hello(self) -> Hello:
        avail, total = mem_info()
        try:
            flash_free: int | None = shutil.disk_usage(self.reconciler.runtime.data_dir).free
        except OSError:
            flash_free = None
        return Hello(
            board=self.config.board,
            firmware=AGENT_VERSION,
            arch=platform.machine() or "unknown",
            runtimes=(Runtime.DOCKER,),
            mem_free=avail,
            boot_count=self.boot_count,
            token=self.config.token,
            mem_total=total or None,
            flash_free=flash_free,
        )

    async def register(self) -> Registered:
        uri = f"{self.base}/rd?ep={quote(self.config.device, safe='')}"
        msg = aiocoap.Message(
            code=aiocoap.POST, uri=uri, payload=self.hello().to_cbor(), content_format=ContentFormat.CBOR
        )
        resp = await self._request(msg)
        if resp.code != aiocoap.CREATED and resp.code != aiocoap.CHANGED:
            raise ConnectionError(f"registration refused: {resp.code} {resp.payload[:200]!r}")
        self.registered = Registered.from_cbor(resp.payload)
        # The gateway's registry mirror, unless the agent was given its own (runtime decides).
        self.reconciler.runtime.offer_mirror(self.registered.registry_mirror)
        log.info(
            "registered with %s as %s (lifetime %ds)", self.base, self.config.device, self.registered.lifetime
        )
        return self.registered

    async def _registration_loop(self) -> None:
        while True:
            try:
                reg = await self.register()
                # Renew well before the lifetime ends, as RFC 9176 clients do.
                await asyncio.sleep(max(1.0, reg.lifetime * 0.8))
            except (OSError, aiocoap.error.Error, WireError) as exc:
                self._error(f"registration failed: {exc}")
                await asyncio.sleep(self.config.retry)

    # ------------------------------------------------------------ desired state

    async def _desired_loop(self) -> None:
        uri = f"{self.base}/d/{quote(self.config.device, safe='')}/desired"
        while True:
            try:
                await self._observe(uri)
            except (OSError, aiocoap.error.Error, WireError) as exc:
                self._error(f"desired state: {exc}")
            # Observation over or unsupported: poll with the ETag until the next observe attempt.
            try:
                await self._poll_once(uri)
            except (OSError, aiocoap.error.Error, WireError) as exc:
                self._error(f"desired state poll: {exc}")
            await asyncio.sleep(self.config.poll_interval if self.desired_etag else self.config.retry)

    async def _observe(self, uri: str) -> None:
        assert self.ctx is not None
        req = self.ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
        first = await req.response
        self._handle_desired(first)
        if first.opt.observe is None:
            return  # the gateway answered without Observe: poll instead
        async for notification in req.observation:
            self._handle_desired(notification)

    async def _poll_once(self, uri: str) -> None:
        msg = aiocoap.Message(code=aiocoap.GET, uri=uri)
        if self.desired_etag:
            msg.opt.etags = (self.desired_etag,)
        self._handle_desired(await self._request(msg))

    def _handle_desired(self, resp: aiocoap.Message) -> None:
        if resp.code == aiocoap.VALID:
            return  # 2.03: our copy is current
        if resp.code != aiocoap.CONTENT:
            raise ConnectionError(f"GET desired answered {resp.code}")
        doc = DesiredDoc.from_cbor(resp.payload)
        self.desired_etag = resp.opt.etag
        if doc.gen == self.desired_gen and self.reconciler.desired_gen == doc.gen:
            return
        specs: list[WorkloadSpec] = []
        problems = []
        for wl in doc.workloads:
            if not isinstance(wl, DockerWorkload):
                problems.append(f"{wl.name}: runtime {wl.runtime} is not run by the SBC agent")
                continue
            try:
                specs.append(from_wire(wl))
            except SpecError as exc:
                problems.append(str(exc))
        self.last_error = "; ".join(problems)
        self.desired_gen = doc.gen
        log.info("desired generation %d: %d docker workloads", doc.gen, len(specs))
        self.reconciler.set_desired(specs, doc.gen)
        if self.on_desired is not None:
            self.on_desired(doc)
        self.report_soon()

    # ------------------------------------------------------------ reports

    def build_report(self) -> Report:
        reports = self.reconciler.reports()
        error = self.reconciler.engine_error or self.last_error or None
        return Report(
            gen=self.reconciler.applied_gen,
            workloads=tuple(r.to_wire() for r in reports),
            heap_free=mem_info()[0],
            uptime=int(time.monotonic() - self._started),
            error=error,
        )

    async def send_report(self) -> None:
        uri = f"{self.base}/d/{quote(self.config.device, safe='')}/report"
        payload = self.build_report().to_cbor()
        msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload, content_format=ContentFormat.CBOR)
        resp = await self._request(msg)
        if not resp.code.is_successful():
            raise ConnectionError(f"report refused: {resp.code} {resp.payload[:200]!r}")
        self.reports_sent += 1

    async def _report_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.report_interval):
                    await self._report_now.wait()
            self._report_now.clear()
            if self.registered is None:
                continue
            try:
                await self.send_report()
            except (OSError, aiocoap.error.Error, WireError) as exc:
                self._error(f"report failed: {exc}")
                await asyncio.sleep(self.config.retry)
                self._report_now.set()  # the change is still unreported

    # ------------------------------------------------------------ logs

    async def log_batch(self, uid: str, container: str, tail: int = 100) -> LogBatch | None:
        if uid not in self.reconciler.desired:
            return None
        entries = await self.reconciler.runtime.logs(uid, container, tail)
        lines = tuple(LogLine(e.t_ms, LogStream(e.stream), e.text) for e in entries)
        return LogBatch(uid=uid, container=container, lines=lines)

    async def push_logs(self, uid: str, container: str, tail: int = 100) -> int:
        """POST the last ``tail`` lines to the gateway; returns how many were sent."""
        batch = await self.log_batch(uid, container, tail)
        if batch is None:
            return 0
        uri = f"{self.base}/d/{quote(self.config.device, safe='')}/logs"
        msg = aiocoap.Message(
            code=aiocoap.POST, uri=uri, payload=batch.to_cbor(), content_format=ContentFormat.CBOR
        )
        resp = await self._request(msg)
        if not resp.code.is_successful():
            raise ConnectionError(f"logs refused: {resp.code}")
        return len(batch.lines)

    # ------------------------------------------------------------ helpers

    async def _request(self, msg: aiocoap.Message) -> aiocoap.Message:
        if self.ctx is None:
            raise ConnectionError("session not running")
        resp: aiocoap.Message = await self.ctx.request(msg).response
        return resp

    def _error(self, text: str) -> None:
        if text != self.last_error:
            log.warning("%s", text)
        self.last_error = text
