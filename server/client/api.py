"""The async HTTP client for the fleetlet API (docs/API.md)."""

from __future__ import annotations

import asyncio
import builtins
import copy
import errno
import logging
import socket
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from .. import jsoncodec
from .config import ClientConfig, normalize_server
from .errors import REASONS, ApiError, ConnectionFailed
from .resources import API_VERSION, DEFAULT_NAMESPACE, REGISTRY, ResourceType
from .resources import KindLike as KindLike
from .resources import resource_path as resource_path
from .resources import resource_type as resource_type

log = logging.getLogger(__name__)

Obj = dict[str, Any]


USER_AGENT = "fleetlet-client/0.1"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK (ERROR events are raised as ApiError)
    object: Obj

    @property
    def resource_version(self) -> str | None:
        rv = self.object.get("metadata", {}).get("resourceVersion")
        return str(rv) if rv is not None else None


def _describe_os_error(exc: BaseException) -> str:
    """Turn socket-level failures into the short phrase a user recognises."""
    err = exc
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, BaseException):
        err = os_error
    if isinstance(err, socket.gaierror):
        return "unknown host"
    if isinstance(err, ConnectionRefusedError) or getattr(err, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset by peer"
    strerror = getattr(err, "strerror", None)
    if strerror:
        return str(strerror).lower()
    return str(err) or type(err).__name__


class ApiClient:
    """Async client. Use ``async with ApiClient.from_config(ClientConfig.load()) as api: ...``.

    All methods raise :class:`ApiError` for non-2xx answers (the server's Status is kept in
    ``status_obj``) and :class:`ConnectionFailed` when the server cannot be reached.
    """

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        user_agent: str = USER_AGENT,
        max_connections: int = 100,
    ):
        self.server = normalize_server(server)
        self.token = token
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._headers = {"Accept": "application/json", "User-Agent": user_agent}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: ClientConfig, **kwargs: Any) -> ApiClient:
        return cls(config.server, config.token, **kwargs)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Created lazily: a ClientSession must be made inside a running loop.
            self._session = aiohttp.ClientSession(
                headers=self._headers, connector=aiohttp.TCPConnector(limit=self.max_connections)
            )
        return self._session

    # ---- raw requests -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109 - per-request deadline handed to aiohttp
    ) -> Any:
        """Send one request; return the decoded JSON answer (or text when it is not JSON)."""
        url = self.server + path
        data: bytes | None = None
        headers: dict[str, str] = {}
        if body is not None:
            data = body if isinstance(body, bytes) else jsoncodec.dumpb(body)
            headers["Content-Type"] = content_type
        client_timeout = aiohttp.ClientTimeout(
            total=timeout if timeout is not None else self.timeout, sock_connect=self.connect_timeout
        )
        try:
            async with self._get_session().request(
                method, url, params=params, data=data, headers=headers, timeout=client_timeout
            ) as resp:
                raw = await resp.read()
                log.debug("%s %s -> %d (%d bytes)", method, resp.url, resp.status, len(raw))
                if resp.status >= 400:
                    raise self._error_from_response(resp.status, raw)
                return _decode(raw, resp.content_type)
        except ApiError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise self._connection_failed(e, timeout if timeout is not None else self.timeout) from e

    def _connection_failed(self, exc: BaseException, timeout: float | None) -> ConnectionFailed:
        if isinstance(exc, asyncio.TimeoutError):
            return ConnectionFailed(self.server, f"no answer within {timeout:g}s" if timeout else "timed out")
        if isinstance(exc, aiohttp.InvalidURL):
            return ConnectionFailed(self.server, "invalid server URL")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return ConnectionFailed(self.server, "the server closed the connection")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return ConnectionFailed(self.server, "the response was cut short")
        if isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError):
            return ConnectionFailed(self.server, f"invalid server URL ({exc})")
        return ConnectionFailed(self.server, _describe_os_error(exc))

    @staticmethod
    def _error_from_response(status: int, raw: bytes) -> ApiError:
        try:
            doc = jsoncodec.loads(raw) if raw else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            return ApiError.from_status(doc, status)
        reason = REASONS.get(status, "Unknown")
        text = raw.decode(errors="replace").strip()
        message = text.splitlines()[0][:300] if text else f"the server answered {status} {reason}"
        return ApiError(status, reason, message)

    # ---- typed verbs ------------------------------------------------------------------

    async def get(self, kind: KindLike, name: str, namespace: str | None = None) -> Obj:
        rt = resource_type(kind)
        return await self._obj("GET", resource_path(rt, namespace, name))

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
        rt = resource_type(kind)
        params = _params(
            labelSelector=label_selector,
            fieldSelector=field_selector,
            limit=str(limit) if limit else None,
            resourceVersion=resource_version,
            **{"continue": continue_token},
        )
        return await self._obj("GET", resource_path(rt, namespace), params=params)

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
        rt, ns, _ = self._target(obj, namespace, need_name=False)
        return await self._obj("POST", resource_path(rt, ns if rt.namespaced else None), body=obj)

    async def replace(self, obj: Obj, namespace: str | None = None) -> Obj:
        """PUT; a ``metadata.resourceVersion`` in ``obj`` is a precondition (409 Conflict if stale)."""
        rt, ns, name = self._target(obj, namespace)
        return await self._obj("PUT", resource_path(rt, ns, name), body=obj)

    async def replace_status(self, obj: Obj, namespace: str | None = None) -> Obj:
        rt, ns, name = self._target(obj, namespace)
        return await self._obj("PUT", resource_path(rt, ns, name, "status"), body=obj)

    async def patch(self, kind: KindLike, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """JSON merge patch (RFC 7386): ``None`` values delete keys."""
        rt = resource_type(kind)
        return await self._obj(
            "PATCH", resource_path(rt, namespace, name), body=patch, content_type=MERGE_PATCH
        )

    async def patch_status(self, kind: KindLike, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        rt = resource_type(kind)
        return await self._obj(
            "PATCH",
            resource_path(rt, namespace, name, "status"),
            body=patch,
            content_type=MERGE_PATCH,
        )

    async def delete(
        self,
        kind: KindLike,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Obj:
        """``propagation_policy``: Background, Foreground or Orphan. Answers the object or a Status."""
        rt = resource_type(kind)
        body: Obj | None = None
        if preconditions:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": dict(preconditions)}
        params = _params(propagationPolicy=propagation_policy)
        return await self._obj("DELETE", resource_path(rt, namespace, name), params=params, body=body)

    async def bind(self, namespace: str, workload: str, device: str) -> Obj:
        """Bind a workload to a device (sets spec.deviceName and spec.gatewayName atomically)."""
        rt = REGISTRY.for_kind("Workload")
        body = {
            "apiVersion": API_VERSION,
            "kind": "Binding",
            "metadata": {"name": workload, "namespace": namespace},
            "target": {"kind": "Device", "name": device},
        }
        return await self._obj("POST", resource_path(rt, namespace, workload, "binding"), body=body)

    async def bind_many(
        self, namespace: str, bindings: Sequence[tuple[str, str]]
    ) -> builtins.list[ApiError | None]:
        """Bind many (workload, device) pairs of one namespace in one request.

        One result per pair, in order: None when bound, else the item's error (409 when already
        bound, 404 when the workload or device is gone). A failure of the request as a whole
        (auth, connection, 5xx) raises, as other calls do.
        """
        body = {
            "apiVersion": API_VERSION,
            "kind": "BindingList",
            "items": [
                {"metadata": {"name": w}, "target": {"kind": "Device", "name": d}} for w, d in bindings
            ],
        }
        ns = quote(namespace, safe="")
        answer = await self._obj("POST", f"/api/v1/namespaces/{ns}/bindings", body=body)
        items = answer.get("items")
        if not isinstance(items, list) or len(items) != len(bindings):
            raise ApiError(500, "InternalError", "the server answered a BindingList with the wrong items")
        out: builtins.list[ApiError | None] = []
        for item in items:
            st = item.get("status") if isinstance(item, dict) else None
            code = st.get("code") if isinstance(st, dict) else None
            if code == 201:
                out.append(None)
            else:
                out.append(ApiError.from_status(st if isinstance(st, dict) else {}, 500))
        return out

    async def version(self) -> Obj:
        return await self._obj("GET", "/version")

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
        rt = resource_type(kind)
        params = _params(
            watch="true",
            labelSelector=label_selector,
            fieldSelector=field_selector,
            resourceVersion=resource_version,
            allowWatchBookmarks="true" if allow_watch_bookmarks else None,
            timeoutSeconds=str(timeout_seconds) if timeout_seconds is not None else None,
        )
        # No total deadline on a stream; a read stall longer than the server's own timeout
        # (plus slack) means the connection is dead.
        sock_read = timeout_seconds + 30.0 if timeout_seconds is not None else None
        client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=sock_read
        )
        url = self.server + resource_path(rt, namespace)
        try:
            async with self._get_session().get(url, params=params, timeout=client_timeout) as resp:
                log.debug("WATCH %s -> %d", resp.url, resp.status)
                if resp.status >= 400:
                    raise self._error_from_response(resp.status, await resp.read())
                buf = b""
                # Our own line splitting: StreamReader.readline caps lines far below the 3 MiB object limit.
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        event = _parse_event(line)
                        if event is not None:
                            yield event
                if buf.strip():
                    event = _parse_event(buf)
                    if event is not None:
                        yield event
        except ApiError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise self._connection_failed(e, sock_read) from e

    # ---- helpers ----------------------------------------------------------------------

    async def _obj(self, method: str, path: str, **kwargs: Any) -> Obj:
        result = await self.request(method, path, **kwargs)
        if not isinstance(result, dict):
            raise ApiError(500, "InternalError", f"unexpected answer to {method} {path}: not a JSON object")
        return result

    @staticmethod
    def _target(
        obj: Obj, namespace: str | None, need_name: bool = True
    ) -> tuple[ResourceType, str | None, str]:
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError("the object has no kind")
        rt = REGISTRY.for_kind(kind)
        meta = obj.get("metadata") or {}
        name = meta.get("name") or ""
        if need_name and not name:
            raise ValueError(f"the {kind} has no metadata.name")
        ns: str | None = None
        if rt.namespaced:
            obj_ns = meta.get("namespace")
            if obj_ns and namespace and obj_ns != namespace:
                raise ValueError(
                    f'the namespace from the provided object "{obj_ns}" does not match'
                    f' the namespace "{namespace}"'
                )
            ns = obj_ns or namespace or DEFAULT_NAMESPACE
        return rt, ns, str(name)


def _params(**kwargs: str | None) -> dict[str, str]:
    return {k: v for k, v in kwargs.items() if v is not None and v != ""}


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return {}
    try:
        return jsoncodec.loads(raw)
    except ValueError:
        if "json" in content_type:
            raise ApiError(500, "InternalError", "the server sent malformed JSON") from None
        return raw.decode(errors="replace")


def _parse_event(line: bytes) -> WatchEvent | None:
    line = line.strip()
    if not line:
        return None
    try:
        doc = jsoncodec.loads(line)
    except ValueError:
        raise ApiError(500, "InternalError", "malformed watch event from the server") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("object"), dict):
        raise ApiError(500, "InternalError", "malformed watch event from the server")
    etype = str(doc.get("type", ""))
    obj: Obj = doc["object"]
    if etype == "ERROR":
        raise ApiError.from_status(obj, obj.get("code") if isinstance(obj.get("code"), int) else 500)
    return WatchEvent(etype, obj)


def strip_for_write(obj: Obj) -> Obj:
    """A copy without the fields the server owns, for re-submitting something we read."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in ("uid", "creationTimestamp", "generation", "managedFields", "deletionTimestamp"):
        meta.pop(key, None)
    return out
