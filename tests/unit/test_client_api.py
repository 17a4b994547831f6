"""ApiClient and Informer protocol handling against a scripted in-process HTTP server.

The real API server is exercised in tests/integration/test_cli_*.py. Here a tiny aiohttp app
plays exact, repeatable scripts (410 mid-stream, a stream that ends, a 200 KB event line)
that a real server only produces under load or compaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fleetlet.server.client import ApiClient, ApiError, ConnectionFailed, Informer

from tests.fixtures import free_tcp_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def obj(name: str, rv: int, kind: str = "Device", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": kind,
        "metadata": {"name": name, "resourceVersion": str(rv)},
        "spec": dict(spec),
    }


async def stream(
    request: web.Request, events: list[dict[str, Any]], hold: bool = False
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    for ev in events:
        await resp.write(json.dumps(ev).encode() + b"\n")
    if hold:
        await asyncio.sleep(3600)  # the test cancels the client before this ends
    return resp


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Handler]], Awaitable[ApiClient]]]:
    servers: list[TestServer] = []
    clients: list[ApiClient] = []

    async def start(routes: dict[str, Handler]) -> ApiClient:
        app = web.Application()
        for key, handler in routes.items():
            method, path = key.split(" ", 1)
            app.router.add_route(method, path, handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = ApiClient(f"http://127.0.0.1:{server.port}", "flt_t_secret", timeout=10)
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()
    for s in servers:
        await s.close()


async def test_status_errors_become_api_error(serve: Any) -> None:
    async def missing(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer flt_t_secret"
        return web.json_response(status(404, "NotFound", 'workloads "x" not found'), status=404)

    api = await serve({"GET /api/v1/namespaces/default/workloads/x": missing})
    with pytest.raises(ApiError) as info:
        await api.get("wl", "x")
    assert (info.value.code, info.value.reason) == (404, "NotFound")
    assert info.value.message == 'workloads "x" not found'
    assert info.value.status_obj["kind"] == "Status"


async def test_non_status_error_body_is_synthesised(serve: Any) -> None:
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream down\nmore")

    api = await serve({"GET /version": teapot})
    with pytest.raises(ApiError) as info:
        await api.version()
    assert (info.value.code, info.value.reason, info.value.message) == (
        503,
        "ServiceUnavailable",
        "upstream down",
    )


async def test_connection_refused_is_clear() -> None:
    port = free_tcp_port()
    async with ApiClient(f"http://127.0.0.1:{port}") as api:
        with pytest.raises(ConnectionFailed) as info:
            await api.list("devices")
    assert str(info.value) == (
        f"cannot reach the fleetlet server at http://127.0.0.1:{port}: "
        "connection refused; is `fleetlet server` running?"
    )
    assert isinstance(info.value, ApiError)


async def test_write_verbs_send_the_right_requests(serve: Any) -> None:
    seen: list[tuple[str, str, str, str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path, request.content_type, request.query_string, body))
        return web.json_response({"kind": "Workload", "metadata": {"name": "web"}})

    routes = {
        f"{m} /api/v1/namespaces/{{ns}}/workloads{{rest:.*}}": record
        for m in ("POST", "PUT", "PATCH", "DELETE")
    }
    api = await serve(routes)
    wl: dict[str, Any] = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "web", "namespace": "prod"},
    }
    await api.create(wl)
    await api.replace({**wl, "metadata": {**wl["metadata"], "resourceVersion": "7"}})
    await api.patch("wl", "web", {"metadata": {"labels": {"a": None}}}, "prod")
    await api.patch_status("wl", "web", {"status": {"phase": "Running"}}, "prod")
    await api.replace_status(wl)
    await api.delete("wl", "web", "prod", propagation_policy="Foreground")
    await api.bind("prod", "web", "pi-1")
    methods = [(m, p, ct, q) for m, p, ct, q, _ in seen]
    assert methods == [
        ("POST", "/api/v1/namespaces/prod/workloads", "application/json", ""),
        ("PUT", "/api/v1/namespaces/prod/workloads/web", "application/json", ""),
        ("PATCH", "/api/v1/namespaces/prod/workloads/web", "application/merge-patch+json", ""),
        ("PATCH", "/api/v1/namespaces/prod/workloads/web/status", "application/merge-patch+json", ""),
        ("PUT", "/api/v1/namespaces/prod/workloads/web/status", "application/json", ""),
        (
            "DELETE",
            "/api/v1/namespaces/prod/workloads/web",
            "application/octet-stream",
            "propagationPolicy=Foreground",
        ),
        ("POST", "/api/v1/namespaces/prod/workloads/web/binding", "application/json", ""),
    ]
    assert seen[2][4] == {"metadata": {"labels": {"a": None}}}
    assert seen[-1][4]["target"] == {"kind": "Device", "name": "pi-1"}
    assert seen[-1][4]["kind"] == "Binding"


async def test_create_rejects_namespace_mismatch(serve: Any) -> None:
    api = await serve({})
    wl = {"kind": "Workload", "metadata": {"name": "web", "namespace": "a"}}
    with pytest.raises(ValueError, match='does not match the namespace "b"'):
        await api.create(wl, "b")


async def test_list_all_follows_continue(serve: Any) -> None:
    async def pages(request: web.Request) -> web.Response:
        token = request.query.get("continue")
        assert request.query["limit"] == "2"
        assert request.query["labelSelector"] == "app=web"
        if token is None:
            items, meta = [obj("a", 1), obj("b", 2)], {"resourceVersion": "9", "continue": "p2"}
        elif token == "p2":
            items, meta = [obj("c", 3)], {"resourceVersion": "9"}
        else:
            raise AssertionError(token)
        return web.json_response({"kind": "DeviceList", "metadata": meta, "items": items})

    api = await serve({"GET /api/v1/devices": pages})
    listing = await api.list_all("dev", label_selector="app=web", page_size=2)
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a", "b", "c"]
    assert listing["metadata"] == {"resourceVersion": "9"}


async def test_watch_parses_ndjson_large_lines_and_raises_error_events(serve: Any) -> None:
    big = "x" * 200_000  # far beyond aiohttp's readline limit

    async def watch(request: web.Request) -> web.StreamResponse:
        assert request.query["watch"] == "true"
        assert request.query["resourceVersion"] == "5"
        assert request.query["allowWatchBookmarks"] == "true"
        assert request.query["timeoutSeconds"] == "30"
        return await stream(
            request,
            [
                {"type": "ADDED", "object": obj("a", 6, blob=big)},
                {"type": "BOOKMARK", "object": {"kind": "Device", "metadata": {"resourceVersion": "7"}}},
                {"type": "ERROR", "object": status(410, "Expired", "too old resource version: 5")},
            ],
        )

    api = await serve({"GET /api/v1/devices": watch})
    got = []
    with pytest.raises(ApiError) as info:
        async for ev in api.watch(
            "devices", resource_version="5", allow_watch_bookmarks=True, timeout_seconds=30
        ):
            got.append((ev.type, ev.resource_version))
    assert got == [("ADDED", "6"), ("BOOKMARK", "7")]
    assert info.value.is_gone


async def test_informer_resumes_relists_on_410_and_diffs_the_cache(serve: Any) -> None:
    watch_rvs: list[str | None] = []
    lists = 0

    async def devices(request: web.Request) -> web.StreamResponse:
        nonlocal lists
        if "watch" not in request.query:
            lists += 1
            if lists == 1:
                items, rv = [obj("a", 5), obj("b", 6)], "10"
            else:
                items, rv = [obj("a", 11), obj("c", 13)], "20"  # b went away, c changed
            return web.json_response(
                {"kind": "DeviceList", "metadata": {"resourceVersion": rv}, "items": items}
            )
        watch_rvs.append(request.query.get("resourceVersion"))
        if len(watch_rvs) == 1:  # changes, then the stream just ends: resume from rv 12
            return await stream(
                request,
                [{"type": "MODIFIED", "object": obj("a", 11)}, {"type": "ADDED", "object": obj("c", 12)}],
            )
        if len(watch_rvs) == 2:
            return await stream(request, [{"type": "ERROR", "object": status(410, "Expired", "gone")}])
        return await stream(request, [{"type": "DELETED", "object": obj("a", 21)}], hold=True)

    api = await serve({"GET /api/v1/devices": devices})
    calls: list[tuple[str, str, str]] = []
    done = asyncio.Event()

    def on_add(o: dict[str, Any]) -> None:
        calls.append(("add", o["metadata"]["name"], o["metadata"]["resourceVersion"]))

    async def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
        calls.append(("update", new["metadata"]["name"], new["metadata"]["resourceVersion"]))

    def on_delete(o: dict[str, Any]) -> None:
        calls.append(("delete", o["metadata"]["name"], o["metadata"]["resourceVersion"]))
        if o["metadata"]["name"] == "a":
            done.set()

    informer = Informer(
        api,
        "devices",
        on_add=on_add,
        on_update=on_update,
        on_delete=on_delete,
        backoff_initial=0.01,
        backoff_max=0.05,
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert watch_rvs == ["10", "12", "20"]
    assert calls == [
        ("add", "a", "5"),
        ("add", "b", "6"),
        ("update", "a", "11"),
        ("add", "c", "12"),
        ("delete", "b", "6"),
        ("update", "c", "13"),  # from the relist diff
        ("delete", "a", "21"),
    ]
    assert set(informer.cache) == {"c"}
    assert informer.resource_version == "21"
    assert informer.relists == 2


async def test_informer_retries_after_server_errors_and_survives_bad_handlers(serve: Any) -> None:
    attempts = 0

    async def devices(request: web.Request) -> web.StreamResponse:
        nonlocal attempts
        if "watch" in request.query:
            return await stream(request, [], hold=True)
        attempts += 1
        if attempts < 3:
            return web.json_response(status(500, "InternalError", "boom"), status=500)
        return web.json_response(
            {"kind": "DeviceList", "metadata": {"resourceVersion": "3"}, "items": [obj("a", 1), obj("b", 2)]}
        )

    api = await serve({"GET /api/v1/devices": devices})

    def broken(o: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    informer = Informer(api, "devices", on_add=broken, backoff_initial=0.01, backoff_max=0.02)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert attempts == 3
    assert informer.get("a") is not None and informer.get("b") is not None
