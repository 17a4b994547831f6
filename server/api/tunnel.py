"""Logs on demand through the gateway's tunnel (KubeEdge's cloud-stream idea, kept in memory).

    GET  /api/v1/namespaces/<ns>/workloads/<name>/log?tailLines=N&container=C&timestamps=true
    GET  /api/v1/gateways/<gw>/tunnel          the gateway's long-lived NDJSON stream of requests
    POST /api/v1/gateways/<gw>/tunnel/<id>     the gateway's answer to request <id>

The gateway opens the tunnel (an outbound connection, so it works from behind NAT) and keeps it
open. A log request looks up the Workload's gateway, writes one request line on that gateway's
stream, and waits for the answer (a future keyed by a random request id). Nothing of this is
stored: a tunnel is a queue in this process, and log lines pass straight through.

Request line: ``{"id", "op": "logs", "namespace", "workload", "uid", "runtime", "device",
"container", "tail"}``; the stream also carries ``{"op": "hello"}`` first and ``{"op": "ping"}``
while idle. Answer body: ``{"lines": [[t_ms, stream, text], ...], "error": null}`` (t_ms: Unix
milliseconds or null; stream 0 stdout, 1 stderr), or ``{"error": "...", "code": 404}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..auth.rbac import RequestInfo, authorize
from .bodies import obj_response, read_object
from .state import STATE, request_meta
from .status import ApiError, bad_request, method_not_allowed, not_found, status_obj

log = logging.getLogger("fleetlet.api.tunnel")

ANSWER_TIMEOUT = 10.0  # seconds a log request waits for the gateway
PING_SECONDS = 15.0  # idle keep-alive on the tunnel stream (the gateway reads with a deadline)
QUEUE_SIZE = 64  # requests waiting to be written on one tunnel
MAX_TAIL = 10_000


@dataclass(eq=False)
class Tunnel:
    gateway: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)  # wakes the stream, which then ends


@dataclass(eq=False)
class _Pending:
    gateway: str
    future: asyncio.Future[dict[str, Any]]


class TunnelHub:
    """Open tunnels by gateway, and requests waiting for an answer by id. In memory only."""

    def __init__(self, *, timeout: float = ANSWER_TIMEOUT, ping: float = PING_SECONDS) -> None:
        self.timeout = timeout
        self.ping = ping
        self.tunnels: dict[str, Tunnel] = {}
        self.pending: dict[str, _Pending] = {}

    def open(self, gateway: str) -> Tunnel:
        """A new tunnel for ``gateway``; one it had before (a half-open connection) is ended."""
        old = self.tunnels.get(gateway)
        tunnel = self.tunnels[gateway] = Tunnel(gateway)
        if old is not None:
            log.info("gateway %s opened a new tunnel; ending the previous one", gateway)
            while not old.queue.empty():  # requests not yet written go out on the new tunnel
                queued = old.queue.get_nowait()
                if queued is not None:
                    tunnel.queue.put_nowait(queued)
            old.close()
        return tunnel

    def release(self, tunnel: Tunnel) -> None:
        tunnel.close()
        if self.tunnels.get(tunnel.gateway) is tunnel:
            del self.tunnels[tunnel.gateway]

    def close_all(self) -> None:
        for tunnel in list(self.tunnels.values()):
            self.release(tunnel)
        for p in self.pending.values():
            if not p.future.done():
                p.future.set_exception(ApiError(503, "the API server is shutting down", "ServiceUnavailable"))

    def fail(self, request_id: str, err: ApiError) -> None:
        p = self.pending.get(request_id)
        if p is not None and not p.future.done():
            p.future.set_exception(err)

    def answer(self, gateway: str, request_id: str, body: dict[str, Any]) -> bool:
        p = self.pending.get(request_id)
        if p is None or p.gateway != gateway:
            return False
        if not p.future.done():
            p.future.set_result(body)
        return True

    async def call(self, gateway: str, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request`` over the gateway's tunnel and wait for its answer (503, 504)."""
        tunnel = self.tunnels.get(gateway)
        if tunnel is None or tunnel.closed:
            raise not_connected(gateway)
        request_id = secrets.token_hex(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = _Pending(gateway, future)
        try:
            line = json.dumps({"id": request_id, **request}, separators=(",", ":")).encode() + b"\n"
            try:
                tunnel.queue.put_nowait(line)
            except asyncio.QueueFull:
                raise ApiError(
                    503,
                    f'gateway "{gateway}" is busy: too many requests waiting; retry',
                    "ServiceUnavailable",
                ) from None
            try:
                async with asyncio.timeout(self.timeout):
                    return await future
            except TimeoutError:
                raise ApiError(
                    504,
                    f'gateway "{gateway}" did not answer within {self.timeout:g}s: is it connected '
                    "and can it reach the API server?",
                    "Timeout",
                ) from None
        finally:
            del self.pending[request_id]


TUNNELS = web.AppKey("fleetlet_tunnels", TunnelHub)


def not_connected(gateway: str) -> ApiError:
    return ApiError(
        503,
        f'gateway "{gateway}" is not connected (it has no open tunnel: is `fleetlet gateway` running '
        "and able to reach the API server?)",
        "ServiceUnavailable",
    )


def _principal(request: web.Request) -> Any:
    principal = request_meta(request).principal
    assert principal is not None  # the middleware authenticated every /api request
    return principal


# -- the gateway's side ------------------------------------------------------------------------
async def serve_tunnel(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/gateways/<gw>/tunnel: stream requests to the gateway until it goes away."""
    api = request.app[STATE]
    hub = request.app[TUNNELS]
    gateway = request.match_info["gateway"]
    meta = request_meta(request)
    meta.verb, meta.resource = "watch", "gateways"  # a stream: no latency observation
    if request.method != "GET":
        raise method_not_allowed(f"{request.method} is not supported on {request.path}")
    info = RequestInfo(verb="get", resource="gateways", name=gateway, subresource="tunnel")
    await authorize(_principal(request), info, api.store)
    if api.shutting_down:
        raise ApiError(503, "the API server is shutting down", "ServiceUnavailable")
    resp = web.StreamResponse()
    resp.content_type = "application/x-ndjson"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    tunnel = hub.open(gateway)
    log.info("gateway %s: tunnel open", gateway)
    try:
        await resp.write(b'{"op":"hello"}\n')
        while not tunnel.closed:
            line: bytes | None
            try:
                async with asyncio.timeout(hub.ping):
                    line = await tunnel.queue.get()
            except TimeoutError:
                line = b'{"op":"ping"}\n'
            if line is None or tunnel.closed:
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                _fail_line(hub, line, gateway)
                break
            try:
                await resp.write(line)
            except (ConnectionResetError, RuntimeError):
                _fail_line(hub, line, gateway)
                break
    except asyncio.CancelledError:
        pass  # the server is stopping
    finally:
        hub.release(tunnel)
        log.info("gateway %s: tunnel closed", gateway)
        # Requests still queued for this tunnel will not be written: answer them now.
        while not tunnel.queue.empty():
            queued = tunnel.queue.get_nowait()
            if queued is not None:
                _fail_line(hub, queued, gateway)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write_eof()
    return resp


def _fail_line(hub: TunnelHub, line: bytes, gateway: str) -> None:
    with contextlib.suppress(ValueError, AttributeError):
        request_id = json.loads(line).get("id")
        if request_id:
            hub.fail(str(request_id), not_connected(gateway))


async def answer_tunnel(request: web.Request) -> web.Response:
    """POST /api/v1/gateways/<gw>/tunnel/<id>: the answer to one request."""
    api = request.app[STATE]
    gateway, request_id = request.match_info["gateway"], request.match_info["id"]
    meta = request_meta(request)
    meta.verb, meta.resource = "create", "gateways"
    if request.method != "POST":
        raise method_not_allowed(f"{request.method} is not supported on {request.path}")
    info = RequestInfo(verb="create", resource="gateways", name=gateway, subresource="tunnel")
    await authorize(_principal(request), info, api.store)
    body = await read_object(request, api.max_body)
    if not request.app[TUNNELS].answer(gateway, request_id, body):
        raise not_found(
            f'no request "{request_id}" is waiting for gateway "{gateway}" (it may have timed out)'
        )
    return obj_response(status_obj(200, "", success=True))


# -- the operator's side -----------------------------------------------------------------------
def _tail(request: web.Request) -> int | None:
    text = request.query.get("tailLines", "")
    if text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"tailLines: invalid value {text!r}: must be an integer") from None
    return None if value < 0 else min(value, MAX_TAIL)  # negative: everything, as kubectl's -1


def _container(name: str, spec: dict[str, Any], asked: str | None) -> str | None:
    if spec.get("runtime") != "docker":
        if asked:
            raise bad_request(f"workload {name} runs {spec.get('runtime')}: it has no containers")
        return None
    names = [str(c.get("name")) for c in spec.get("containers") or [] if isinstance(c, dict)]
    if asked:
        if asked not in names:
            raise bad_request(f"container {asked} is not valid for workload {name}: choose one of {names}")
        return asked
    if len(names) == 1:
        return names[0]
    raise bad_request(
        f"a container name must be specified for workload {name}, choose one of: [{' '.join(names)}]"
    )


def _stamp(t_ms: Any) -> str:
    if not isinstance(t_ms, int) or t_ms <= 0:
        return "-"
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def serve_log(request: web.Request) -> web.Response:
    """GET .../workloads/<name>/log: the last lines, fetched through the workload's gateway."""
    api = request.app[STATE]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    meta = request_meta(request)
    meta.verb, meta.resource = "get", "workloads"
    if request.method != "GET":
        raise method_not_allowed(f"{request.method} is not supported on {request.path}")
    info = RequestInfo(
        verb="get", resource="workloads", namespace=namespace, name=name, subresource="log", namespaced=True
    )
    await authorize(_principal(request), info, api.store)
    tail = _tail(request)
    timestamps = request.query.get("timestamps", "").lower() in ("1", "true", "yes")
    workload = await api.store.get("workloads", namespace, name)
    spec = workload.get("spec") or {}
    container = _container(name, spec, request.query.get("container") or None)
    gateway = spec.get("gatewayName")
    if not gateway:
        raise not_found(f"workload {name} is not bound to a device yet")
    answer = await request.app[TUNNELS].call(
        str(gateway),
        {
            "op": "logs",
            "namespace": namespace,
            "workload": name,
            "uid": workload["metadata"].get("uid"),
            "runtime": spec.get("runtime"),
            "device": spec.get("deviceName"),
            "container": container,
            "tail": tail,
        },
    )
    error = answer.get("error")
    if error:
        code = answer["code"] if isinstance(answer.get("code"), int) else 502
        reason = {404: "NotFound", 503: "ServiceUnavailable"}.get(code, "BadGateway")
        raise ApiError(code, f'gateway "{gateway}": {error}', reason)
    lines = answer.get("lines")
    if not isinstance(lines, list):
        raise ApiError(502, f'gateway "{gateway}" sent a malformed answer (no "lines")', "BadGateway")
    if tail is not None:
        lines = lines[-tail:] if tail else []
    out: list[str] = []
    for entry in lines:
        if not isinstance(entry, list) or len(entry) != 3:
            continue
        text = str(entry[2])
        out.append(f"{_stamp(entry[0])} {text}\n" if timestamps else f"{text}\n")
    return web.Response(text="".join(out), content_type="text/plain", charset="utf-8")


def openapi_paths() -> dict[str, Any]:
    """The log and tunnel paths for /openapi.json."""
    text = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    status = {"$ref": "#/components/schemas/Status"}
    err = {"description": "Status", "content": {"application/json": {"schema": status}}}
    q = [
        {"name": "tailLines", "in": "query", "schema": {"type": "integer"}},
        {"name": "container", "in": "query", "schema": {"type": "string"}},
        {"name": "timestamps", "in": "query", "schema": {"type": "boolean"}},
    ]
    ns = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
    wl = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    gw = {"name": "gateway", "in": "path", "required": True, "schema": {"type": "string"}}
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    ndjson = {"description": "NDJSON stream of requests", "content": {"application/x-ndjson": {}}}
    body = {"content": {"application/json": {"schema": {"type": "object"}}}, "required": True}
    errors = {"404": err, "503": err, "504": err}
    return {
        "/api/v1/namespaces/{namespace}/workloads/{name}/log": {
            "get": {
                "operationId": "readWorkloadLog",
                "tags": ["Workload"],
                "parameters": [ns, wl, *q],
                "responses": {"200": text, **errors},
            }
        },
        "/api/v1/gateways/{gateway}/tunnel": {
            "get": {
                "operationId": "openGatewayTunnel",
                "tags": ["Gateway"],
                "parameters": [gw],
                "responses": {"200": ndjson, "403": err},
            }
        },
        "/api/v1/gateways/{gateway}/tunnel/{id}": {
            "post": {
                "operationId": "answerGatewayTunnel",
                "tags": ["Gateway"],
                "parameters": [gw, rid],
                "requestBody": body,
                "responses": {"200": err, "404": err},
            }
        },
    }


__all__ = ["TUNNELS", "TunnelHub", "answer_tunnel", "openapi_paths", "serve_log", "serve_tunnel"]
