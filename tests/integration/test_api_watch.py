"""Watch over HTTP: synthetic ADDED, from a revision, selectors, BOOKMARK, 410 after compaction,
timeoutSeconds, and the end of streams at shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_api_harness import Api, start_api, workload

NS = "/api/v1/namespaces/default"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with start_api(tmp_path, bookmark_interval=0.05) as a:
        yield a


def summary(events: list[Any]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


async def test_watch_from_revision_sees_added_modified_deleted(api: Api) -> None:
    first = await api.ok("POST", f"{NS}/workloads", workload("a"))
    rv = first["metadata"]["resourceVersion"]
    await api.ok("POST", f"{NS}/workloads", workload("b"))
    await api.ok("PATCH", f"{NS}/workloads/a", {"spec": {"priority": 3}})
    await api.ok("DELETE", f"{NS}/workloads/b")
    events = await api.watch_lines(f"{NS}/workloads", {"resourceVersion": rv, "timeoutSeconds": "0.3"})
    assert summary(events) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    revs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revs == sorted(revs) and revs[0] > int(rv)


async def test_watch_without_revision_starts_with_synthetic_added(api: Api) -> None:
    await api.ok("POST", f"{NS}/workloads", workload("x"))
    await api.ok("POST", f"{NS}/workloads", workload("y"))

    async def later() -> None:
        await asyncio.sleep(0.1)
        await api.ok("PATCH", f"{NS}/workloads/x", {"metadata": {"labels": {"v": "2"}}})

    task = asyncio.create_task(later())
    events = await api.watch_lines("/api/v1/workloads", {"timeoutSeconds": "0.6"})
    await task
    assert summary(events) == [("ADDED", "x"), ("ADDED", "y"), ("MODIFIED", "x")]


async def test_watch_stream_headers_and_live_events(api: Api) -> None:
    resp = await api.client.get(
        f"{NS}/configmaps",
        params={"watch": "1", "timeoutSeconds": "5"},
        headers={"Authorization": f"Bearer {api.admin}"},
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "live"}, "data": {}})
    line = await asyncio.wait_for(resp.content.readline(), 5)
    event = json.loads(line)
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "live"
    resp.close()


async def test_watch_with_label_selector_turns_transitions_into_added_deleted(api: Api) -> None:
    start = await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "c", "labels": {"env": "dev"}}})
    rv = start["metadata"]["resourceVersion"]
    await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "other", "labels": {"env": "dev"}}})
    await api.ok("PATCH", f"{NS}/configmaps/c", {"metadata": {"labels": {"env": "prod"}}})
    await api.ok("PATCH", f"{NS}/configmaps/c", {"data": {"k": "v"}})
    await api.ok("PATCH", f"{NS}/configmaps/c", {"metadata": {"labels": {"env": "dev"}}})
    events = await api.watch_lines(
        f"{NS}/configmaps", {"resourceVersion": rv, "labelSelector": "env=prod", "timeoutSeconds": "0.3"}
    )
    assert summary(events) == [("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "c")]
    fields = await api.watch_lines(
        f"{NS}/configmaps",
        {"resourceVersion": rv, "fieldSelector": "metadata.name=other", "timeoutSeconds": "0.3"},
    )
    assert summary(fields) == [("ADDED", "other")]


async def test_bookmarks_carry_resource_version(api: Api) -> None:
    await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "c"}})
    events = await api.watch_lines(
        f"{NS}/configmaps", {"allowWatchBookmarks": "true", "timeoutSeconds": "0.4"}
    )
    assert events[0]["type"] == "ADDED"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert bookmarks[-1]["object"]["metadata"]["resourceVersion"] == str(api.store.revision)
    assert bookmarks[-1]["object"]["kind"] == "ConfigMap"
    none = await api.watch_lines(f"{NS}/configmaps", {"timeoutSeconds": "0.3"})
    assert all(e["type"] != "BOOKMARK" for e in none)


async def test_watch_from_compacted_revision_gets_410_error(api: Api) -> None:
    first = await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "c"}})
    for i in range(5):
        await api.ok("PATCH", f"{NS}/configmaps/c", {"data": {"i": str(i)}})
    await api.store.compact(keep=0)
    rv = str(int(first["metadata"]["resourceVersion"]) - 1)
    events = await api.watch_lines(f"{NS}/configmaps", {"resourceVersion": rv, "timeoutSeconds": "5"})
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    bad = await api.call("GET", f"{NS}/configmaps", params={"watch": "1", "resourceVersion": "abc"})
    assert bad.status == 400


async def test_slow_watcher_is_cut_off_with_error(tmp_path: Path) -> None:
    """A client that stops reading: its socket fills, then its bounded buffer, then it gets 410."""
    import socket

    from fleetlet.server.store import Store

    store = await Store.open(f"sqlite:///{tmp_path}/s.db", compaction_interval=0, watcher_buffer=3)
    try:
        async with start_api_with_store(tmp_path, store) as api:
            server = api.client.server
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, then unread
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, (server.host, server.port))
            request = (
                f"GET {NS}/configmaps?watch=1&timeoutSeconds=30 HTTP/1.1\r\n"
                f"Host: {server.host}\r\nAuthorization: Bearer {api.admin}\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            await asyncio.sleep(0.2)  # the watch is registered
            # About 12 MB of events: more than the server's socket buffer (tcp_wmem max is 4 MB),
            # the transport's write-through limit and the 3-event buffer together.
            big = "x" * (1024 * 1024)
            for i in range(12):
                await api.store.create(
                    "configmaps", {"metadata": {"name": f"c{i}", "namespace": "default"}, "data": {"v": big}}
                )
            received = b""
            async with asyncio.timeout(30):
                while b"0\r\n\r\n" not in received[-16:]:
                    chunk = await loop.sock_recv(sock, 1 << 20)
                    if not chunk:
                        break
                    received += chunk
            sock.close()
            lines = [ln for ln in received.split(b"\r\n") if ln.startswith(b"{")]
            last = json.loads(lines[-1])
            assert last["type"] == "ERROR" and last["object"]["code"] == 410, last["type"]
            assert store.stats().watchers_cut_off == 1
    finally:
        await store.close()


def start_api_with_store(tmp_path: Path, store: Any) -> Any:
    from contextlib import asynccontextmanager

    from aiohttp.test_utils import TestClient, TestServer
    from fleetlet.server.api import create_app
    from fleetlet.server.auth import ensure_admin

    @asynccontextmanager
    async def ctx() -> AsyncIterator[Api]:
        async with TestClient(TestServer(create_app(store))) as client:
            admin = await ensure_admin(store, tmp_path / "d", "http://t", tmp_path / "c.yaml")
            yield Api(client, store, admin, tmp_path / "d")

    return ctx()


async def test_shutdown_ends_open_watches(tmp_path: Path) -> None:
    async with start_api(tmp_path) as api:
        resp = await api.client.get(
            f"{NS}/configmaps", params={"watch": "1"}, headers={"Authorization": f"Bearer {api.admin}"}
        )
        assert resp.status == 200
        reader = asyncio.create_task(resp.text())
        await asyncio.sleep(0.05)
        await api.client.server.runner.shutdown()  # type: ignore[union-attr]
        assert await asyncio.wait_for(reader, 10) == ""


async def test_watch_without_timeout_ends_after_the_minimum_request_timeout(tmp_path: Path) -> None:
    """kube-apiserver's --min-request-timeout: an open-ended watch ends (cleanly, no ERROR)
    after 1-2x the minimum, so authorization is checked again when the client re-watches."""
    async with start_api(tmp_path, min_request_timeout=0.3) as api:
        await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "c"}})
        rv = str(api.store.revision)
        events = await asyncio.wait_for(api.watch_lines(f"{NS}/configmaps", {"resourceVersion": rv}), 10)
        assert events == []  # nothing happened after rv, and the stream ended by itself
        first = await asyncio.wait_for(api.watch_lines(f"{NS}/configmaps", {}), 10)
        assert summary(first) == [("ADDED", "c")]
        # A client's own timeoutSeconds still applies.
        own = api.watch_lines(f"{NS}/configmaps", {"resourceVersion": rv, "timeoutSeconds": "0.05"})
        assert await asyncio.wait_for(own, 10) == []
