"""The gateway's own HTTP/1.1 client (gateway/apiclient.py) and informer (gateway/informer.py),
against small in-process HTTP servers: keep-alive, chunked streams, errors, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fleetlet.gateway.apiclient import ApiClient
from fleetlet.gateway.informer import Informer, slim_object
from fleetlet.server.client.errors import ApiError, ConnectionFailed

from tests.fixtures.require import unavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(
    routes: list[tuple[str, str, Handler]], release: asyncio.Event | None = None, ssl_context: Any = None
) -> AsyncIterator[str]:
    """An aiohttp server on a free port; ``release`` is set before it stops (for handlers that hang)."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        if release is not None:
            release.set()
        await runner.cleanup()


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    return web.json_response({**body, "message": message}, status=code)


async def test_json_verbs_keep_alive_and_errors() -> None:
    peers: set[Any] = set()
    seen: list[tuple[str, str, str, Any]] = []

    async def gateway(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path_qs, request.headers.get("Authorization", ""), body))
        if request.match_info["name"] == "missing":
            return status(404, "NotFound", 'gateways "missing" not found')
        return web.json_response({"kind": "Gateway", "metadata": {"name": request.match_info["name"]}})

    async def device_status(request: web.Request) -> web.Response:
        assert request.content_type == "application/merge-patch+json"
        return web.json_response({"status": (await request.json())["status"]})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain words", status=502)

    routes = [
        ("*", "/api/v1/gateways/{name}", gateway),
        ("PATCH", "/api/v1/devices/{name}/status", device_status),
        ("GET", "/api/v1/namespaces/ns1/secrets/{name}", text),
    ]
    async with serve(routes) as url:
        api = ApiClient(url + "/", "tok", timeout=5)
        try:
            for _ in range(5):
                assert (await api.get("gateways", "gw1"))["metadata"]["name"] == "gw1"
            assert len(peers) == 1  # one kept-alive connection for sequential requests
            patched = await api.patch("gw", "gw1", {"metadata": {"labels": {"a": "b c"}}})
            assert patched["kind"] == "Gateway"
            assert seen[-1] == (
                "PATCH",
                "/api/v1/gateways/gw1",
                "Bearer tok",
                {"metadata": {"labels": {"a": "b c"}}},
            )
            out = await api.patch_status("devices", "d1", {"status": {"phase": "Online"}})
            assert out == {"status": {"phase": "Online"}}
            with pytest.raises(ApiError) as e:
                await api.get("gateways", "missing")
            assert e.value.is_not_found and "missing" in e.value.message
            with pytest.raises(ApiError) as e:
                await api.get("secrets", "s", "ns1")
            assert (e.value.code, e.value.message) == (502, "plain words")
            # Concurrent requests each get a connection; they are kept for reuse afterwards.
            got = await asyncio.gather(*(api.get("gateways", f"g{i}") for i in range(10)))
            assert [g["metadata"]["name"] for g in got] == [f"g{i}" for i in range(10)]
            assert 1 <= len(api._idle) <= 10
        finally:
            await api.close()


async def test_unreachable_and_silent_servers_are_connection_failures() -> None:
    api = ApiClient("http://127.0.0.1:1", None, timeout=2, connect_timeout=2)
    with pytest.raises(ConnectionFailed) as e:
        await api.get("gateways", "gw1")
    assert e.value.detail == "connection refused"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    api = ApiClient(f"http://127.0.0.1:{port}", None, timeout=0.3)
    try:
        with pytest.raises(ConnectionFailed) as e:
            await api.get("gateways", "gw1")
        assert "no answer within 0.3s" in e.value.detail
    finally:
        await api.close()
        server.close()


async def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    """The server answers one request per connection but says keep-alive: the next request
    finds the old connection dead before any answer and goes out again on a new one."""
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"n": %d}' % connections
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    api = ApiClient(f"http://127.0.0.1:{port}", None, timeout=5)
    try:
        assert await api.request("GET", "/x") == {"n": 1}
        await asyncio.sleep(0.1)
        assert await api.request("POST", "/x", body={"a": 1}) == {"n": 2}
        assert await api.request("GET", "/x") == {"n": 3}
    finally:
        await api.close()
        server.close()


async def test_watch_reads_chunked_ndjson_and_raises_error_events() -> None:
    async def watch(request: web.Request) -> web.StreamResponse:
        assert request.query["watch"] == "true"
        assert request.query["fieldSelector"] == "spec.gateway=gw 1"
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        big = {
            "type": "ADDED",
            "object": {"metadata": {"name": "d1", "resourceVersion": "5"}, "x": "y" * 200_000},
        }
        line = json.dumps(big).encode() + b"\n"
        for i in range(0, len(line), 7000):  # one event split over many chunks
            await resp.write(line[i : i + 7000])
        await resp.write(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"6"}}}\n{"type":"MOD')
        await resp.write(b'IFIED","object":{"metadata":{"name":"d1","resourceVersion":"7"}}}\n')
        if request.query.get("resourceVersion") == "7":
            await resp.write(b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}\n')
        await resp.write_eof()
        return resp

    async with serve([("GET", "/api/v1/devices", watch)]) as url:
        api = ApiClient(url, "t", timeout=5)
        try:
            events = [
                (e.type, e.object["metadata"]["resourceVersion"])
                async for e in api.watch("devices", field_selector="spec.gateway=gw 1")
            ]
            assert events == [("ADDED", "5"), ("BOOKMARK", "6"), ("MODIFIED", "7")]
            with pytest.raises(ApiError) as e:
                async for _ in api.watch("devices", field_selector="spec.gateway=gw 1", resource_version="7"):
                    pass
            assert e.value.is_gone
        finally:
            await api.close()


async def test_stream_read_timeout_is_a_connection_failure() -> None:
    release = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"op":"hello"}\n')
        await release.wait()
        return resp

    async with serve([("GET", "/t", stalls)], release) as url:
        api = ApiClient(url, None)
        got: list[bytes] = []
        with pytest.raises(ConnectionFailed):
            async with api.stream("/t", read_timeout=0.3) as lines:
                async for line in lines:
                    got.append(line)
        assert got == [b'{"op":"hello"}']
        await api.close()


async def test_informer_keeps_slim_objects_and_relists() -> None:
    rv = 10
    items = {
        "d1": {
            "metadata": {"name": "d1", "uid": "u1", "resourceVersion": "3", "labels": {"a": "b"}},
            "spec": {"gateway": "gw", "credentialHash": "x" * 64, "capacity": {"memory": "1Gi"}},
            "status": {"phase": "Online"},
        },
        "d2": {"metadata": {"name": "d2", "uid": "u2", "resourceVersion": "4"}, "spec": {"gateway": "gw"}},
    }
    watches = 0
    release = asyncio.Event()

    async def devices(request: web.Request) -> web.StreamResponse:
        nonlocal watches
        if request.query.get("watch") != "true":
            return web.json_response(
                {
                    "kind": "DeviceList",
                    "metadata": {"resourceVersion": str(rv)},
                    "items": list(items.values()),
                }
            )
        watches += 1
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if watches == 1:
            assert request.query["resourceVersion"] == "10"
            await resp.write(
                b'{"type":"DELETED","object":{"metadata":{"name":"d2","uid":"u2","resourceVersion":"11"}}}\n'
            )
            await resp.write(b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}\n')
        else:
            await release.wait()
        return resp

    added: list[dict[str, Any]] = []
    deleted: list[str] = []
    async with serve([("GET", "/api/v1/devices", devices)], release) as url:
        api = ApiClient(url, None, timeout=5)
        inf = Informer(
            api,
            "devices",
            on_add=added.append,
            on_delete=lambda o: deleted.append(o["metadata"]["name"]),
            slim=slim_object,
            backoff_initial=0.01,
        )
        task = asyncio.create_task(inf.run())
        try:
            await asyncio.wait_for(inf.wait_synced(), 5)
            assert added[0] is items["d1"] or added[0] == items["d1"]  # handlers get the whole object
            cached = inf.get("d1")
            assert cached == {
                "metadata": {"name": "d1", "uid": "u1", "resourceVersion": "3"},
                "spec": {"gateway": "gw"},
                "status": {"phase": "Online"},
            }
            for _ in range(200):
                if inf.relists == 2:
                    break
                await asyncio.sleep(0.02)
            assert inf.relists == 2  # 410 on the watch: a new list, which has d2 again
            assert deleted == ["d2"] and inf.get("d2") is not None
            assert [a["metadata"]["name"] for a in added] == ["d1", "d2", "d2"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await api.close()


def test_the_gateway_imports_neither_aiohttp_nor_openssl_for_an_http_server() -> None:
    code = (
        "import sys\n"
        "from fleetlet.gateway.main import _block_ssl_unless_needed, _use_builtin_hashes\n"
        "blocked = _block_ssl_unless_needed(sys.argv[1]), _use_builtin_hashes()\n"
        "import asyncio, hashlib\n"
        "from fleetlet.gateway import apiclient, coap_provider, coap_server, informer, tunnel, upstream\n"
        "assert hashlib.sha256(b'abc').hexdigest().startswith('ba7816bf')\n"
        "if not blocked[0]:\n"
        "    import ssl\n"
        "names = ('aiohttp', 'ssl', 'yarl', '_hashlib')\n"
        "crypto = 'libcrypto' in open('/proc/self/maps').read()\n"
        "print(blocked, sorted(m for m in names if sys.modules.get(m) is not None), crypto)\n"
    )
    for url, want in (
        ("http://127.0.0.1:8080", "(True, True) [] False"),
        ("127.0.0.1:8080", "(True, True) [] False"),
        ("https://h:1", "(False, True) ['ssl'] True"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == want, url


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("the openssl command (Debian openssl), to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_https_server_is_verified(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    cert, key = self_signed
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def gateway(request: web.Request) -> web.Response:
        return web.json_response({"metadata": {"name": request.match_info["name"]}})

    async with serve([("GET", "/api/v1/gateways/{name}", gateway)], ssl_context=server_ctx) as url:
        assert url.startswith("https://")
        api = ApiClient(url, "t", timeout=10)
        with pytest.raises(ConnectionFailed) as e:  # not signed by a trusted CA
            await api.get("gateways", "gw1")
        assert "certificate" in e.value.detail.lower()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now it is
        assert (await api.get("gateways", "gw1"))["metadata"]["name"] == "gw1"
        await api.close()
