"""The gateway's client of the fleetlet API: a small HTTP/1.1 client on asyncio streams.

The rest of fleetlet talks to the API through ``fleetlet.server.client.ApiClient`` (aiohttp).
The gateway does not: importing aiohttp (with yarl, multidict, attrs, http.cookies, email...)
adds about 14 MB of RSS to a process, more than a third of the gateway's whole budget of 40 MB
with 1,000 devices on a Raspberry Pi (docs/ARCHITECTURE.md). What the gateway needs is small:
JSON requests over a few keep-alive connections, and long NDJSON streams (watches, the logs
tunnel) over chunked transfer encoding.

:class:`ApiClient` has the subset of the fleetlet client's interface the gateway uses (``get``,
``create``, ``patch``, ``patch_status``, ``list``, ``list_all``, ``watch``, ``request``, ``server``,
``token``, ``close``) with the same semantics and the same errors
(:class:`~fleetlet.server.client.errors.ApiError`, :class:`ConnectionFailed`), so either client
can drive the gateway's components. ``https://`` servers use the ``ssl`` module, imported only
then (see :func:`fleetlet.gateway.main.main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fleetlet.server.client.config import normalize_server
from fleetlet.server.client.errors import REASONS, ApiError, ConnectionFailed
from fleetlet.server.client.resources import (
    DEFAULT_NAMESPACE,
    REGISTRY,
    KindLike,
    resource_path,
    resource_type,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]


USER_AGENT = "fleetlet-gateway/0.1"
MERGE_PATCH = "application/merge-patch+json"
MAX_CONNECTIONS = 32  # requests in flight at once (status flushes send 32 patches together)
IDLE_SECONDS = 30.0  # an idle keep-alive connection older than this is closed, not reused
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK (ERROR events are raised as ApiError)
    object: Obj


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Response:
    """Status and headers of a response whose body is still to be read from ``conn``."""

    __slots__ = ("chunked", "conn", "keep_alive", "length", "status", "type")

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str], method: str) -> None:
        self.conn = conn
        self.status = status
        self.type = headers.get("content-type", "")
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self.length: int | None = int(length) if length is not None and not self.chunked else None
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self.length = 0
        self.keep_alive = headers.get("connection", "").lower() != "close" and (
            self.chunked or self.length is not None
        )

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body, piece by piece as it arrives."""
        reader = self.conn.reader
        if self.chunked:
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return
                data = await reader.readexactly(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("malformed chunk")
                yield data
        elif self.length is not None:
            left = self.length
            while left > 0:
                data = await reader.read(min(left, 256 * 1024))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data
        else:
            while data := await reader.read(256 * 1024):
                yield data

    async def body(self) -> bytes:
        if self.length is not None:
            return await self.conn.reader.readexactly(self.length) if self.length else b""
        return b"".join([c async for c in self.chunks()])


class ApiClient:
    """``api = ApiClient("http://127.0.0.1:8080", token)``; ``await api.close()`` at the end."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        user_agent: str = USER_AGENT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.server = normalize_server(server)
        self.token = token
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._headers = f"Accept: application/json\r\nUser-Agent: {user_agent}\r\n"
        if token:
            self._headers += f"Authorization: Bearer {token}\r\n"
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---- connections ----------------------------------------------------------------------

    def _target(self) -> tuple[str, int, bool, str, str]:
        """(host, port, tls, Host header, path prefix) of the server URL."""
        parts = urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {self.server!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return host, port, tls, netloc, parts.path.rstrip("/")

    async def _connect(self, host: str, port: int, tls: bool) -> _Conn:
        ssl_context: Any = None
        if tls:
            import ssl  # only for https servers: the module costs ~4 MB of RSS

            ssl_context = ssl.create_default_context()
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context, limit=MAX_HEADER_BYTES
            )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer)

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_SECONDS and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def _release(self, conn: _Conn) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def _send(self, conn: _Conn, head: bytes, body: bytes | None) -> _Response:
        conn.writer.write(head + body if body else head)
        await conn.writer.drain()
        raw = await conn.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(rest.split(" ", 1)[0])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        method = head[: head.index(b" ")].decode()
        resp = _Response(conn, status, headers, method)
        if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            resp.keep_alive = False
        return resp

    def _head(self, method: str, path: str, params: Mapping[str, str] | None, extra: str) -> bytes:
        _, _, _, netloc, prefix = self._target()
        target = prefix + path
        if params:
            target += "?" + urlencode(params, quote_via=quote)
        return f"{method} {target} HTTP/1.1\r\nHost: {netloc}\r\n{self._headers}{extra}\r\n".encode()

    # ---- raw requests ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109 - per-request deadline, as the fleetlet client's
    ) -> Any:
        """Send one request; return the decoded JSON answer (or text when it is not JSON)."""
        deadline = timeout if timeout is not None else self.timeout
        data: bytes | None = None
        extra = ""
        if body is not None:
            data = body if isinstance(body, bytes) else _dumpb(body)
            extra = f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            extra = "Content-Length: 0\r\n"
        try:
            head = self._head(method, path, params, extra)
            host, port, tls, _, _ = self._target()
            async with asyncio.timeout(deadline), self._slots:
                status, ctype, raw = await self._exchange(host, port, tls, head, data)
        except ApiError:
            raise
        except (TimeoutError, OSError, ValueError, EOFError, asyncio.LimitOverrunError) as e:
            raise self._connection_failed(e, deadline) from e
        log.debug("%s %s -> %d (%d bytes)", method, path, status, len(raw))
        if status >= 400:
            raise _error_from_response(status, raw)
        return _decode(raw, ctype)

    async def _exchange(
        self, host: str, port: int, tls: bool, head: bytes, data: bytes | None
    ) -> tuple[int, str, bytes]:
        conn = self._take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(host, port, tls)
            try:
                resp = await self._send(conn, head, data)
                raw = await resp.body()
            except (OSError, EOFError) as e:
                conn.close()
                # A kept-alive connection the server closed meanwhile fails before any answer:
                # once, on a fresh connection.
                got_nothing = isinstance(e, OSError) or (
                    isinstance(e, asyncio.IncompleteReadError) and not e.partial
                )
                if reused and got_nothing:
                    conn, reused = None, False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if resp.keep_alive:
                self._release(conn)
            else:
                conn.close()
            return resp.status, resp.type, raw

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """``async with api.stream(path) as lines: async for line in lines: ...``: a long GET on a
        connection of its own, read line by line (NDJSON). A non-2xx answer raises ApiError;
        a connection that fails, or stays silent for ``read_timeout``, raises ConnectionFailed."""
        conn: _Conn | None = None
        try:
            head = self._head("GET", path, params, "")
            host, port, tls, _, _ = self._target()
            conn = await self._connect(host, port, tls)
            async with asyncio.timeout(self.timeout):
                resp = await self._send(conn, head, None)
                if resp.status >= 400:
                    raise _error_from_response(resp.status, await resp.body())
        except ApiError:
            if conn is not None:
                conn.close()
            raise
        except (TimeoutError, OSError, ValueError, EOFError, asyncio.LimitOverrunError) as e:
            if conn is not None:
                conn.close()
            raise self._connection_failed(e, self.timeout) from e
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        lines = self._lines(resp, read_timeout)
        try:
            yield lines
        finally:
            with contextlib.suppress(Exception):
                await lines.aclose()
            conn.close()

    async def _lines(self, resp: _Response, read_timeout: float | None) -> AsyncGenerator[bytes, None]:
        buf = b""
        chunks = resp.chunks()
        try:
            while True:
                try:
                    async with asyncio.timeout(read_timeout):
                        chunk = await anext(chunks, None)
                except (TimeoutError, OSError, ValueError, EOFError, asyncio.LimitOverrunError) as e:
                    raise self._connection_failed(e, read_timeout) from e
                if chunk is None:
                    break
                buf += chunk
                if b"\n" in buf:
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        yield line
            if buf.strip():
                yield buf
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()

    def _connection_failed(self, exc: BaseException, timeout: float | None) -> ConnectionFailed:
        if isinstance(exc, TimeoutError):
            return ConnectionFailed(self.server, f"no answer within {timeout:g}s" if timeout else "timed out")
        if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError):
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                return ConnectionFailed(self.server, "the response was cut short")
            return ConnectionFailed(self.server, "the server closed the connection")
        if isinstance(exc, asyncio.LimitOverrunError):
            return ConnectionFailed(self.server, "malformed response (headers too large)")
        if isinstance(exc, ValueError):
            text = str(exc)
            if "URL" in text:
                return ConnectionFailed(self.server, f"invalid server URL ({text})")
            return ConnectionFailed(self.server, f"malformed response ({text[:100]})")
        return ConnectionFailed(self.server, _describe_os_error(exc))

    # ---- typed verbs ----------------------------------------------------------------------

    async def get(self, kind: KindLike, name: str, namespace: str | None = None) -> Obj:
        return await self._obj("GET", resource_path(resource_type(kind), namespace, name))

    async def list(
        self,
        kind: KindLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        """One page of a list. ``namespace=None`` on a namespaced kind lists all namespaces."""
        params = _params(
            labelSelector=label_selector,
            fieldSelector=field_selector,
            limit=str(limit) if limit else None,
            resourceVersion=resource_version,
            **{"continue": continue_token},
        )
        return await self._obj("GET", resource_path(resource_type(kind), namespace), params=params)

    async def list_all(
        self,
        kind: KindLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> Obj:
        """Every page, following ``continue``; the answer has all items and the first page's metadata.

        A continue token that expired mid-way (410) restarts the list once from the beginning.
        """
        for attempt in (1, 2):
            try:
                first = await self.list(
                    kind,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=page_size,
                )
                items: list[Obj] = list(first.get("items") or [])
                token = (first.get("metadata") or {}).get("continue")
                while token:
                    page = await self.list(
                        kind,
                        namespace,
                        label_selector=label_selector,
                        field_selector=field_selector,
                        limit=page_size,
                        continue_token=token,
                    )
                    items.extend(page.get("items") or [])
                    token = (page.get("metadata") or {}).get("continue")
            except ApiError as e:
                if e.is_gone and attempt == 1:
                    continue
                raise
            meta = dict(first.get("metadata") or {})
            meta.pop("continue", None)
            meta.pop("remainingItemCount", None)
            return {**first, "metadata": meta, "items": items}
        raise AssertionError("unreachable")

    async def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError("the object has no kind")
        rt = REGISTRY.for_kind(kind)
        ns: str | None = None
        if rt.namespaced:
            ns = (obj.get("metadata") or {}).get("namespace") or namespace or DEFAULT_NAMESPACE
        return await self._obj("POST", resource_path(rt, ns), body=obj)

    async def patch(self, kind: KindLike, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """JSON merge patch (RFC 7386): ``None`` values delete keys."""
        path = resource_path(resource_type(kind), namespace, name)
        return await self._obj("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def patch_status(self, kind: KindLike, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        path = resource_path(resource_type(kind), namespace, name, "status")
        return await self._obj("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def watch(
        self,
        kind: KindLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        allow_watch_bookmarks: bool = False,
        timeout_seconds: int | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Yield events from the NDJSON watch stream until the server ends it.

        An ERROR event is raised as :class:`ApiError` (410 Expired means: relist). A stream cut
        short raises :class:`ConnectionFailed`. Close early with ``contextlib.aclosing``.
        """
        params = _params(
            watch="true",
            labelSelector=label_selector,
            fieldSelector=field_selector,
            resourceVersion=resource_version,
            allowWatchBookmarks="true" if allow_watch_bookmarks else None,
            timeoutSeconds=str(timeout_seconds) if timeout_seconds is not None else None,
        )
        # A read stall longer than the server's own timeout (plus slack) means a dead connection.
        read_timeout = timeout_seconds + 30.0 if timeout_seconds is not None else None
        path = resource_path(resource_type(kind), namespace)
        async with self.stream(path, params=params, read_timeout=read_timeout) as lines:
            async for line in lines:
                event = _parse_event(line)
                if event is not None:
                    yield event

    async def _obj(self, method: str, path: str, **kwargs: Any) -> Obj:
        result = await self.request(method, path, **kwargs)
        if not isinstance(result, dict):
            raise ApiError(500, "InternalError", f"unexpected answer to {method} {path}: not a JSON object")
        return result


def _dumpb(obj: Any) -> bytes:
    # The stdlib's json, not orjson (fleetlet.server.jsoncodec): the gateway's API traffic is
    # small, and orjson would be another ~1 MB of RSS in the process.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _params(**kwargs: str | None) -> dict[str, str]:
    return {k: v for k, v in kwargs.items() if v is not None and v != ""}


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        if "json" in content_type:
            raise ApiError(500, "InternalError", "the server sent malformed JSON") from None
        return raw.decode(errors="replace")


def _error_from_response(status: int, raw: bytes) -> ApiError:
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        return ApiError.from_status(doc, status)
    reason = REASONS.get(status, "Unknown")
    text = raw.decode(errors="replace").strip()
    message = text.splitlines()[0][:300] if text else f"the server answered {status} {reason}"
    return ApiError(status, reason, message)


def _parse_event(line: bytes) -> WatchEvent | None:
    line = line.strip()
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        raise ApiError(500, "InternalError", "malformed watch event from the server") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("object"), dict):
        raise ApiError(500, "InternalError", "malformed watch event from the server")
    etype = str(doc.get("type", ""))
    obj: Obj = doc["object"]
    if etype == "ERROR":
        raise ApiError.from_status(obj, obj.get("code") if isinstance(obj.get("code"), int) else 500)
    return WatchEvent(etype, obj)


def _describe_os_error(exc: BaseException) -> str:
    """Socket-level failures as the short phrase a user recognises."""
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return str(strerror).lower()
    return str(exc) or type(exc).__name__


__all__ = ["ApiClient", "WatchEvent", "resource_path", "resource_type"]
