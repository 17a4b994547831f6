"""Logs through the gateway's tunnel, in process: the API (aiohttp TestServer) and a fake gateway
that opens ``/api/v1/gateways/<gw>/tunnel`` and answers over HTTP, as gateway/tunnel.py does.

Covers the request routing, the answer shaping (tailLines, timestamps, container), 503 when the
gateway has no tunnel, 504 when it does not answer, 404 for an unbound workload, and RBAC."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fleetlet.server.api.tunnel import TUNNELS, TunnelHub

from tests.integration.test_api_harness import Api, Reply, device, start_api, workload

NS = "/api/v1/namespaces/default"
T0 = 1_764_169_200_000  # 2025-11-26T15:00:00Z in Unix ms


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with start_api(tmp_path) as a:
        await a.ok("POST", "/api/v1/devices", device("d1", gateway="gw1"))
        await a.ok("POST", "/api/v1/devices", device("d2", gateway="gw2"))
        yield a


def hub(api: Api) -> TunnelHub:
    return api.client.server.app[TUNNELS]  # type: ignore[union-attr]


async def bound(api: Api, name: str, dev: str, **spec: Any) -> dict[str, Any]:
    created = await api.ok("POST", f"{NS}/workloads", workload(name, **spec))
    await api.ok("POST", f"{NS}/workloads/{name}/binding", {"target": {"kind": "Device", "name": dev}})
    return dict(created)


class FakeGateway:
    """Reads the tunnel stream like gateway/tunnel.py; the test decides what to answer."""

    def __init__(self, api: Api, name: str, token: str) -> None:
        self.api, self.name, self.token = api, name, token
        self.resp: Any = None

    async def open(self) -> None:
        self.resp = await self.api.client.get(
            f"/api/v1/gateways/{self.name}/tunnel", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert self.resp.status == 200, await self.resp.text()
        assert json.loads(await self.resp.content.readline()) == {"op": "hello"}

    async def next_request(self) -> dict[str, Any]:
        while True:
            line = await self.resp.content.readline()
            assert line, "the tunnel stream ended"
            msg = json.loads(line)
            if msg.get("op") != "ping":
                return dict(msg)

    async def answer(self, request_id: str, body: dict[str, Any], *, gateway: str | None = None) -> Reply:
        return await self.api.call(
            "POST", f"/api/v1/gateways/{gateway or self.name}/tunnel/{request_id}", body, token=self.token
        )

    def close(self) -> None:
        self.resp.close()


async def gateway(api: Api, name: str) -> FakeGateway:
    fake = FakeGateway(api, name, await api.token("gateway", gateway=name))
    await fake.open()
    return fake


async def test_log_request_goes_to_the_workloads_gateway(api: Api) -> None:
    created = await bound(api, "web", "d1")
    gw1 = await gateway(api, "gw1")
    call = asyncio.create_task(
        api.call("GET", f"{NS}/workloads/web/log", params={"tailLines": "2", "timestamps": "true"})
    )
    req = await gw1.next_request()
    assert req["op"] == "logs"
    assert (req["namespace"], req["workload"], req["uid"]) == ("default", "web", created["metadata"]["uid"])
    assert (req["runtime"], req["device"], req["container"], req["tail"]) == ("docker", "d1", "main", 2)
    lines = [[T0, 0, "one"], [T0 + 1500, 1, "two"], [T0 + 2250, 0, "three"]]
    assert (await gw1.answer(req["id"], {"lines": lines, "error": None})).status == 200
    reply = await call
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    assert reply.text == "2025-11-26T15:00:01.500Z two\n2025-11-26T15:00:02.250Z three\n"
    # A second answer to the same id finds nobody waiting.
    late = await gw1.answer(req["id"], {"lines": []})
    assert late.status == 404 and "may have timed out" in late.message
    gw1.close()


async def test_all_lines_without_tail_and_lines_that_look_like_json(api: Api) -> None:
    await bound(api, "app", "d1")
    gw1 = await gateway(api, "gw1")
    call = asyncio.create_task(api.call("GET", f"{NS}/workloads/app/log"))
    req = await gw1.next_request()
    assert req["tail"] is None
    await gw1.answer(req["id"], {"lines": [[0, 0, "42"], [T0, 0, '{"a": 1}']], "error": None})
    reply = await call
    assert reply.status == 200 and reply.text == '42\n{"a": 1}\n'
    gw1.close()


async def test_gateway_error_answer_becomes_a_status(api: Api) -> None:
    await bound(api, "web", "d1")
    gw1 = await gateway(api, "gw1")
    call = asyncio.create_task(api.call("GET", f"{NS}/workloads/web/log"))
    req = await gw1.next_request()
    await gw1.answer(req["id"], {"lines": [], "error": "no such device", "code": 404})
    reply = await call
    assert reply.status == 404 and reply.message == 'gateway "gw1": no such device'
    gw1.close()


async def test_not_connected_is_503(api: Api) -> None:
    await bound(api, "web", "d2")
    r = await api.call("GET", f"{NS}/workloads/web/log")
    assert r.status == 503 and r.body["reason"] == "ServiceUnavailable"
    assert r.message.startswith('gateway "gw2" is not connected')


async def test_silent_gateway_is_504_and_closed_tunnel_is_503(api: Api) -> None:
    await bound(api, "web", "d1")
    hub(api).timeout = 0.5
    gw1 = await gateway(api, "gw1")
    call = asyncio.create_task(api.call("GET", f"{NS}/workloads/web/log"))
    req = await gw1.next_request()  # received, never answered
    r = await call
    assert r.status == 504 and r.body["reason"] == "Timeout"
    assert 'gateway "gw1" did not answer' in r.message
    assert (await gw1.answer(req["id"], {"lines": []})).status == 404
    assert req["id"] not in hub(api).pending
    # The gateway goes away: the API notices (on the next write at the latest) and answers 503.
    gw1.close()
    for _ in range(40):
        r = await api.call("GET", f"{NS}/workloads/web/log")
        if r.status == 503:
            break
    assert r.status == 503 and 'gateway "gw1" is not connected' in r.message
    assert "gw1" not in hub(api).tunnels


async def test_a_new_tunnel_replaces_the_old_one(api: Api) -> None:
    await bound(api, "web", "d1")
    first = await gateway(api, "gw1")
    second = FakeGateway(api, "gw1", first.token)
    await second.open()
    assert await first.resp.content.readline() == b""  # the old stream ended
    call = asyncio.create_task(api.call("GET", f"{NS}/workloads/web/log"))
    req = await second.next_request()
    await second.answer(req["id"], {"lines": [[T0, 0, "via second"]], "error": None})
    assert (await call).text == "via second\n"
    second.close()


async def test_unbound_workload_and_bad_requests(api: Api) -> None:
    await api.ok("POST", f"{NS}/workloads", workload("pending"))
    r = await api.call("GET", f"{NS}/workloads/pending/log")
    assert r.status == 404 and r.message == "workload pending is not bound to a device yet"
    assert (await api.call("GET", f"{NS}/workloads/nope/log")).status == 404
    assert (await api.call("GET", f"{NS}/workloads/pending/log", params={"tailLines": "x"})).status == 400
    bad = await api.call("GET", f"{NS}/workloads/pending/log", params={"container": "sidecar"})
    assert bad.status == 400 and "container sidecar is not valid" in bad.message
    assert (await api.call("POST", f"{NS}/workloads/pending/log", {})).status == 405
    two = workload("two")
    two["spec"]["containers"].append({"name": "side", "image": "busybox"})
    await api.ok("POST", f"{NS}/workloads", two)
    r = await api.call("GET", f"{NS}/workloads/two/log")
    assert r.status == 400 and "a container name must be specified" in r.message and "main side" in r.message


async def test_rbac(api: Api) -> None:
    await bound(api, "web", "d2")  # gw2 has no tunnel: an authorized request answers 503
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    path = f"{NS}/workloads/web/log"
    viewer = await api.token("viewer")
    operator = await api.token("operator")
    fenced = await api.token("operator", namespaces=["other"])
    gw2 = await api.token("gateway", gateway="gw2")
    assert (await api.call("GET", path, token=operator)).status == 503
    for tok in (viewer, fenced, gw2):
        r = await api.call("GET", path, token=tok)
        assert r.status == 403 and r.body["reason"] == "Forbidden", r.text
    assert (await api.call("GET", path, token=None)).status == 401
    # Only a gateway opens (and answers) its own tunnel.
    for tok in (viewer, operator, gw2):
        r = await api.call("GET", "/api/v1/gateways/gw1/tunnel", token=tok)
        assert r.status == 403, r.text
    # gw2 cannot answer a request meant for gw1, by either path.
    await bound(api, "mine", "d1")
    gw1 = await gateway(api, "gw1")
    call = asyncio.create_task(api.call("GET", f"{NS}/workloads/mine/log"))
    req = await gw1.next_request()
    forged = {"lines": [[T0, 0, "forged"]], "error": None}
    assert (
        await api.call("POST", f"/api/v1/gateways/gw1/tunnel/{req['id']}", forged, token=gw2)
    ).status == 403
    assert (
        await api.call("POST", f"/api/v1/gateways/gw2/tunnel/{req['id']}", forged, token=gw2)
    ).status == 404
    await gw1.answer(req["id"], {"lines": [[T0, 0, "genuine"]], "error": None})
    assert (await call).text == "genuine\n"
    gw1.close()


async def test_openapi_lists_log_and_tunnel_paths(api: Api) -> None:
    doc = await api.ok("GET", "/openapi.json")
    for path in (
        "/api/v1/namespaces/{namespace}/workloads/{name}/log",
        "/api/v1/gateways/{gateway}/tunnel",
        "/api/v1/gateways/{gateway}/tunnel/{id}",
    ):
        assert path in doc["paths"], path
    from openapi_spec_validator import validate

    validate(doc)


# -- the gateway's half, in process: gateway/tunnel.py against this API ------------------------
async def test_gateway_tunnel_answers_from_its_buffer_and_reconnects(api: Api) -> None:
    from fleetlet.gateway.logbuffer import LogBuffer
    from fleetlet.gateway.tunnel import LogTunnel
    from fleetlet.gateway.wire import LogBatch, LogLine, LogStream
    from fleetlet.server.client import ApiClient

    created = await bound(api, "web", "d1")
    uid = created["metadata"]["uid"]
    buf = LogBuffer()
    buf.add(LogBatch(uid=uid, container="main", lines=(LogLine(T0, LogStream.STDOUT, "buffered"),)))
    buf.add(LogBatch(uid=uid, container="side", lines=(LogLine(T0, LogStream.STDOUT, "other container"),)))
    client = ApiClient(str(api.client.make_url("")), await api.token("gateway", gateway="gw1"))
    # A docker workload whose device address is unknown: the buffer answers.
    tunnel = LogTunnel(client, "gw1", buf, backoff=(0.05, 0.2))
    task = asyncio.create_task(tunnel.run())
    try:
        await asyncio.wait_for(tunnel.connected.wait(), 30)
        r = await api.call("GET", f"{NS}/workloads/web/log")
        assert (r.status, r.text) == (200, "buffered\n")
        # The API ends the tunnel (say, a restart): the gateway opens a new one by itself.
        first = hub(api).tunnels["gw1"]
        first.close()
        for _ in range(300):
            current = hub(api).tunnels.get("gw1")
            if current is not None and current is not first and tunnel.connected.is_set():
                break
            await asyncio.sleep(0.05)
        r = await api.call("GET", f"{NS}/workloads/web/log", params={"tailLines": "0"})
        assert (r.status, r.text) == (200, "")
        r = await api.call("GET", f"{NS}/workloads/web/log")
        assert (r.status, r.text) == (200, "buffered\n")
        assert tunnel.answered == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def test_log_buffer_bounds_and_clocks() -> None:
    from fleetlet.gateway.logbuffer import LogBuffer
    from fleetlet.gateway.wire import LogBatch, LogClock, LogLine, LogStream

    now = [1_000.0]
    buf = LogBuffer(per_workload=3, max_bytes=10_000, clock=lambda: now[0])
    assert buf.tail("nobody") == [] and len(buf) == 0  # lazy: no buffer until lines arrive
    lines = tuple(LogLine(i * 10, LogStream.STDOUT, f"l{i}") for i in range(5))
    assert buf.add(LogBatch(uid="a", lines=lines, clock=LogClock.UPTIME_MS)) == 3
    # Uptime stamps: the batch's last line lands at its arrival, earlier ones keep their spacing.
    assert buf.tail("a") == [(999_980, 0, None, "l2"), (999_990, 0, None, "l3"), (1_000_000, 0, None, "l4")]
    assert [ln[3] for ln in buf.tail("a", n=1)] == ["l4"]
    assert buf.tail("a", n=0) == []
    buf.add(LogBatch(uid="a", container="c1", lines=(LogLine(5, LogStream.STDERR, "x" * 5000),)))
    kept = buf.tail("a", "c1")
    assert len(kept[-1][3]) < 1100 and kept[-1][3].endswith("...")  # one line is capped
    assert len(buf.tail("a")) == 3  # the per-workload cap holds
    # The total cap evicts the oldest lines of the least recently written workload first.
    small = LogBuffer(per_workload=100, max_bytes=1_000)
    small.add(LogBatch(uid="old", lines=tuple(LogLine(i, LogStream.STDOUT, "o" * 100) for i in range(5))))
    small.add(LogBatch(uid="new", lines=tuple(LogLine(i, LogStream.STDOUT, "n" * 100) for i in range(5))))
    assert small.size <= 1_000
    assert len(small.tail("new")) == 5 and len(small.tail("old")) < 5
    small.add(LogBatch(uid="new", lines=tuple(LogLine(i, LogStream.STDOUT, "m" * 100) for i in range(5))))
    assert small.tail("old") == [] and len(small) == 1 and small.size <= 1_000
    small.forget("new")
    assert small.size == 0 and len(small) == 0
