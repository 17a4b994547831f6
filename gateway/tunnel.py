"""The gateway's end of the API's tunnel (server/api/tunnel.py): logs on demand.

The gateway opens ``GET /api/v1/gateways/<name>/tunnel`` (outbound, so it works from behind NAT)
and keeps it open, reconnecting with backoff like the informers. Each request line it reads is
answered with ``POST /api/v1/gateways/<name>/tunnel/<id>``:

- ``logs`` of a docker workload: ask the SBC agent for a fresh tail (CoAP ``GET /l?uid=&c=&n=``
  to the address it last spoke from, through the gateway's own CoAP socket); if the agent does
  not answer, the recent lines kept in the :class:`~.logbuffer.LogBuffer`.
- ``logs`` of a MicroPython workload: the log buffer (fed by the devices' log batches).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from fleetlet.server.client.errors import ApiError

from .apiclient import ApiClient
from .logbuffer import PER_WORKLOAD, Line, LogBuffer
from .wire import LogBatch, WireError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MAX_INFLIGHT = 32
READ_TIMEOUT = 60.0  # the API pings every 15 s; silence this long means a dead connection
DEVICE_TIMEOUT = 4.0  # the API waits 10 s for the whole answer
AGENT_MAX_TAIL = 1000  # the agent's own cap


class Api(Protocol):
    """What the tunnel needs of an API client: the gateway's (gateway/apiclient.py) or fleetlet's."""

    server: str
    token: str | None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the clients' per-request deadline
    ) -> Any: ...


class LogTunnel:
    def __init__(
        self,
        api: Api,
        name: str,
        buffer: LogBuffer,
        *,
        peers: Mapping[str, str] | None = None,
        coap: Callable[[], Any] | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        device_timeout: float = DEVICE_TIMEOUT,
    ) -> None:
        self.api = api
        # The stream is read with the gateway's own client (whichever client answers).
        self._streams = api if isinstance(api, ApiClient) else ApiClient(api.server, api.token, timeout=15.0)
        self.name = name
        self.buffer = buffer
        self.peers = peers if peers is not None else {}  # device -> "host:port" it last spoke from
        self.coap = coap  # the gateway's CoAP endpoint (for requests to devices), or None
        self.backoff = backoff
        self.device_timeout = device_timeout
        self.connected = asyncio.Event()
        self.answered = 0
        self._was_up = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> str:
        return f"/api/v1/gateways/{quote(self.name, safe='')}/tunnel"

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._streams is not self.api:
                await self._streams.close()

    async def _loop(self) -> None:
        delay = self.backoff[0]
        last_error = ""
        while True:
            try:
                async with self._streams.stream(self.path, read_timeout=READ_TIMEOUT) as lines:
                    await self._serve(lines)
                error = "the API server ended the tunnel"
            except asyncio.CancelledError:
                raise
            except (ApiError, OSError, TimeoutError, ValueError) as e:
                error = str(e) if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
            except Exception as e:  # never take the gateway down over its log tunnel
                log.exception("log tunnel failed")
                error = f"{type(e).__name__}: {e}"
            self.connected.clear()
            if self._was_up or error != last_error:
                log.warning("log tunnel to %s: %s; reconnecting", self.api.server, error)
            last_error = error
            if self._was_up:
                delay = self.backoff[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _serve(self, lines: AsyncIterator[bytes]) -> None:
        self._was_up = False
        async for raw in lines:
            if not raw.strip():
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                log.warning("log tunnel: malformed line %r", raw[:100])
                continue
            if not isinstance(msg, dict):
                continue
            op = msg.get("op")
            if op == "hello":
                if not self._was_up:
                    log.info("log tunnel open to %s", self.api.server)
                self._was_up = True
                self.connected.set()
            elif op == "ping":
                pass
            elif isinstance(msg.get("id"), str):
                self._dispatch(msg)

    def _dispatch(self, msg: Obj) -> None:
        if len(self._tasks) >= MAX_INFLIGHT:
            reply: Obj = {"lines": [], "error": "the gateway is busy; retry", "code": 503}
            task = asyncio.create_task(self._reply(msg["id"], reply))
        else:
            task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Obj) -> None:
        try:
            if msg.get("op") == "logs":
                reply = await self.logs(msg)
            else:
                reply = {"lines": [], "error": f"unsupported operation {msg.get('op')!r}", "code": 400}
        except Exception as e:
            log.exception("log tunnel request %s failed", msg.get("id"))
            reply = {"lines": [], "error": f"the gateway failed: {type(e).__name__}", "code": 500}
        await self._reply(msg["id"], reply)

    async def _reply(self, request_id: str, reply: Obj) -> None:
        try:
            await self.api.request(
                "POST", f"{self.path}/{quote(request_id, safe='')}", body=reply, timeout=10
            )
            self.answered += 1
        except Exception as e:
            log.warning("log tunnel: answering %s failed: %s", request_id, e)

    async def logs(self, msg: Obj) -> Obj:
        uid = str(msg.get("uid") or "")
        container = msg.get("container") if isinstance(msg.get("container"), str) else None
        tail = msg.get("tail") if isinstance(msg.get("tail"), int) else None
        device = msg.get("device") if isinstance(msg.get("device"), str) else None
        lines: list[Line] | None = None
        if msg.get("runtime") == "docker" and device and container:
            lines = await self.from_agent(device, uid, container, tail)
        if lines is None:
            lines = self.buffer.tail(uid, container, tail)
        return {"lines": [[t, stream, text] for t, stream, _, text in lines], "error": None}

    async def from_agent(self, device: str, uid: str, container: str, tail: int | None) -> list[Line] | None:
        """A fresh tail from the SBC agent, or None when it cannot be asked or does not answer."""
        ctx = self.coap() if self.coap is not None else None
        hostinfo = self.peers.get(device)
        if ctx is None or not hostinfo:
            return None
        from .coap import Code, code_str, is_success
        from .coap_endpoint import CoapError

        n = min(tail if tail is not None else PER_WORKLOAD, AGENT_MAX_TAIL)
        if n == 0:
            return []
        uri = f"/l?uid={quote(uid, safe='')}&c={quote(container, safe='')}&n={n}"
        try:
            async with asyncio.timeout(self.device_timeout):
                resp = await ctx.request(hostinfo, Code.GET, uri)
        except (TimeoutError, OSError, CoapError) as e:
            log.info("logs of %s from device %s: no answer (%s); using the buffer", uid, device, e)
            return None
        if not is_success(resp.code):
            log.info("logs of %s from device %s: %s; using the buffer", uid, device, code_str(resp.code))
            return None
        try:
            batch = LogBatch.from_cbor(resp.payload)
        except WireError as e:
            log.warning("logs of %s from device %s: bad batch: %s", uid, device, e)
            return None
        return [(ln.t, int(ln.stream), container, ln.text) for ln in batch.lines]


__all__ = ["LogTunnel"]
