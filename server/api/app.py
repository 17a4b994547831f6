"""The aiohttp application: middleware (auth, errors, metrics) and the non-resource endpoints."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.hdrs import EXPECT
from aiohttp.web_server import Server
from fleetlet.schemas.api_schemas import KindSpec, generate_openapi

from ..auth.tokens import TokenIndex
from ..store import Store
from ..store.errors import AlreadyExists, StoreError
from . import admission
from .bodies import error_response, obj_response, raw_response, too_large
from .handlers import API_PREFIX, dispatch, handle
from .metrics import CONTENT_TYPE, ApiMetrics
from .resources import API_VERSION, BY_PLURAL, KINDS, SYSTEM_NAMESPACES
from .state import STATE, ApiState, request_meta
from .status import ApiError, from_store_error, not_found, reason_for
from .tunnel import TUNNELS, TunnelHub, answer_tunnel, openapi_paths, serve_log, serve_tunnel
from .validation import validate

log = logging.getLogger("fleetlet.api")

VERSION = "0.1.0"
DEFAULT_MAX_BODY = 3 * 1024 * 1024
ANONYMOUS_PATHS = frozenset({"/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _log_error(request: web.Request, err: ApiError) -> None:
    level = logging.WARNING if err.code in (400, 401, 403, 413, 415, 422) else logging.INFO
    if err.code >= 500:
        level = logging.ERROR
    log.log(level, "%s %s -> %d %s: %s", request.method, request.path, err.code, err.reason, err.message)


def _from_http(exc: web.HTTPException, request: web.Request, api: ApiState) -> ApiError:
    code = exc.status_code
    if code == 404:
        return not_found(f"the server could not find the requested resource: {request.path}")
    if code == 405:
        return ApiError(405, f"{request.method} is not supported on {request.path}")
    if code == 413:
        return too_large(api.max_body)
    return ApiError(code, exc.text or exc.reason, reason_for(code))


async def serve_api(
    api: ApiState, request: web.Request, handler: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Authenticate, run, turn every failure into a Status, and count the request."""
    started = time.perf_counter()
    meta = request_meta(request)
    try:
        if request.path not in ANONYMOUS_PATHS:
            meta.principal = api.tokens.authenticate(request.headers.get("Authorization"))
        resp = await handler()
    except StoreError as e:
        err = from_store_error(e)
    except web.HTTPException as e:
        if e.status_code < 400:
            raise
        err = _from_http(e, request, api)
    except Exception:
        log.exception("%s %s: internal error", request.method, request.path)
        err = ApiError(500, "internal error; see the server log")
    else:
        verb = meta.verb or request.method.lower()
        elapsed = None if verb == "watch" else time.perf_counter() - started
        api.metrics.observe(verb, meta.resource, resp.status, elapsed)
        return resp
    _log_error(request, err)
    verb = meta.verb or request.method.lower()
    api.metrics.observe(verb, meta.resource, err.code, time.perf_counter() - started)
    return error_response(err)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await serve_api(request.app[STATE], request, lambda: handler(request))


def _routed(path: str) -> bool:
    """Paths with handlers of their own (logs, the tunnel): the router sends them there."""
    return path.endswith("/log") or "/tunnel" in path


def fast_handler(app: web.Application) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The server's request handler: /api/v1 resource requests go straight to the dispatcher.

    aiohttp's Application._handle (router resolution, match info, the middleware chain) cost
    about a tenth of the server's CPU per create in bench/store; resource paths need none of it,
    their dispatcher parses the path itself. Everything else (and Expect: 100-continue, which
    the router's expect handler answers) takes the Application's own path, so both paths serve
    the same API (test_api_fast_path replays the same requests through both).
    """
    api = app[STATE]
    routed = app._handle  # the Application's own handler (private), for everything else

    async def handler(base: web.BaseRequest) -> web.StreamResponse:
        request = cast(web.Request, base)  # made by the Application's request factory
        path = request.rel_url.path_safe
        if path.startswith(API_PREFIX) and not _routed(path) and EXPECT not in request.headers:
            tail = path[len(API_PREFIX) :]
            return await serve_api(api, request, lambda: dispatch(api, request, tail))
        return await routed(request)

    return handler


class ApiRunner(web.AppRunner):
    """An AppRunner whose server uses :func:`fast_handler` (startup/shutdown signals unchanged)."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.request_handler = fast_handler(self.app)
        return server


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    api = request.app[STATE]
    if not api.store.ready or api.shutting_down:
        raise ApiError(503, "not ready: the store is not open", "ServiceUnavailable")
    return web.Response(text="ok")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def version(request: web.Request) -> web.Response:
    return obj_response(
        {
            "major": "0",
            "minor": "1",
            "gitVersion": f"v{VERSION}",
            "apiVersion": API_VERSION,
            "platform": f"{platform.system().lower()}/{platform.machine()}",
            "python": platform.python_version(),
            "storeBackend": request.app[STATE].store.dialect,
        }
    )


def openapi_document() -> bytes:
    kinds = [KindSpec(k.kind, k.plural, k.namespaced, k.status_subresource, k.subresources) for k in KINDS]
    doc = generate_openapi(kinds, VERSION)
    doc["paths"].update(openapi_paths())
    return json.dumps(doc, separators=(",", ":")).encode()


async def openapi(request: web.Request) -> web.Response:
    api = request.app[STATE]
    if api.openapi is None:
        api.openapi = openapi_document()
    return raw_response(api.openapi)


async def ensure_system_namespaces(store: Store) -> None:
    kind = BY_PLURAL["namespaces"]
    for name in SYSTEM_NAMESPACES:
        if store.peek("namespaces", "", name) is not None:
            continue
        obj: dict[str, object] = {"metadata": {"name": name}}
        causes, _ = admission.admit_create(kind, obj)
        validate(kind.kind, obj, extra=causes)
        try:
            await store.create("namespaces", obj)
            log.info("created namespace %s", name)
        except AlreadyExists:
            pass


async def _on_startup(app: web.Application) -> None:
    api = app[STATE]
    await ensure_system_namespaces(api.store)
    await api.tokens.start()


async def _on_shutdown(app: web.Application) -> None:
    api = app[STATE]
    api.shutting_down = True
    app[TUNNELS].close_all()  # ends each gateway's tunnel stream
    for w in list(api.watchers):
        w.close()  # ends each open watch stream


async def _on_cleanup(app: web.Application) -> None:
    await app[STATE].tokens.stop()


def create_app(
    store: Store,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    bookmark_interval: float = 60.0,
    tokens: TokenIndex | None = None,
    min_request_timeout: float = 1800.0,
) -> web.Application:
    """The API application over an open store. The caller owns (and closes) the store."""
    # client_max_size a little over our limit: we answer 413 ourselves, as a Status.
    app = web.Application(middlewares=[api_middleware], client_max_size=max_body + 1)
    app[STATE] = ApiState(
        store=store,
        tokens=tokens or TokenIndex(store),
        metrics=ApiMetrics(store),
        max_body=max_body,
        bookmark_interval=bookmark_interval,
        min_request_timeout=min_request_timeout,
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/version", version)
    app.router.add_get("/openapi.json", openapi)
    app[TUNNELS] = TunnelHub()
    # Logs through the gateway's tunnel (server/api/tunnel.py); before the generic handler.
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/workloads/{name}/log", serve_log)
    app.router.add_route("*", "/api/v1/gateways/{gateway}/tunnel", serve_tunnel)
    app.router.add_route("*", "/api/v1/gateways/{gateway}/tunnel/{id}", answer_tunnel)
    app.router.add_route("*", "/api/v1/{tail:.*}", handle)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app
