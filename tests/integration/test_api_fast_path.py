"""The server's fast path (ApiRunner: /api/v1 straight to the dispatcher) and aiohttp's router
path (what a plain AppRunner serves) answer every kind of request the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fleetlet.server.api import create_app
from fleetlet.server.auth import ensure_admin
from fleetlet.server.store import Store

from .test_api_harness import ApiTestServer

pytestmark = pytest.mark.asyncio

VOLATILE = ("uid", "creationTimestamp", "resourceVersion")


def _normal(body: Any) -> Any:
    """The body without what differs between two stores (uids, times, revisions)."""
    if isinstance(body, dict):
        return {k: _normal(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [_normal(v) for v in body]
    return body


CM = {"apiVersion": "fleetlet.io/v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "1"}}
# (method, path, body, extra headers): creates, reads, errors, non-resource paths.
REQUESTS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("POST", "/api/v1/namespaces/default/configmaps", CM, {}),
    ("POST", "/api/v1/namespaces/default/configmaps", CM, {}),  # 409
    ("GET", "/api/v1/namespaces/default/configmaps/c1", None, {}),
    ("GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%3Db", None, {}),
    ("PATCH", "/api/v1/namespaces/default/configmaps/c1", {"data": {"b": "2"}}, {}),
    ("GET", "/api/v1/namespaces/default/configmaps/nope", None, {}),  # 404 Status
    ("GET", "/api/v1/nonsense", None, {}),  # unknown resource
    ("PUT", "/api/v1/namespaces", None, {}),  # 405
    ("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "Bad_Name"}}, {}),  # 422
    ("GET", "/api/v1/namespaces/default/configmaps/c1", None, {"Authorization": "Bearer flt_bad.x"}),
    ("GET", "/api/v1/namespaces/default/workloads/w1/log", None, {}),  # a routed path
    ("DELETE", "/api/v1/namespaces/default/configmaps/c1", None, {}),
    ("GET", "/healthz", None, {}),
    ("GET", "/version", None, {}),
]


async def _replay(tmp_path: Path, server_cls: type[TestServer]) -> list[tuple[int, Any]]:
    store = await Store.open(f"sqlite:///{tmp_path}-fleetlet.db", compaction_interval=0)
    try:
        async with TestClient(server_cls(create_app(store))) as client:
            admin = await ensure_admin(store, tmp_path / "data", "http://test", tmp_path / "config.yaml")
            out: list[tuple[int, Any]] = []
            for method, path, body, headers in REQUESTS:
                hdrs = {"Authorization": f"Bearer {admin}", **headers}
                data = None if body is None else json.dumps(body)
                if data is not None:
                    patch = method == "PATCH"
                    hdrs["Content-Type"] = "application/merge-patch+json" if patch else "application/json"
                async with client.request(method, path, data=data, headers=hdrs) as resp:
                    text = await resp.text()
                    try:
                        parsed: Any = json.loads(text)
                    except ValueError:
                        parsed = text
                    out.append((resp.status, _normal(parsed)))
            auth = {"Authorization": f"Bearer {admin}"}
            metrics = await (await client.get("/metrics", headers=auth)).text()
            counted = [line for line in metrics.splitlines() if "apiserver_requests_total{" in line]
            out.append((0, sorted(counted)))
            return out
    finally:
        await store.close()


async def test_fast_path_answers_like_the_router(tmp_path: Path) -> None:
    routed = await _replay(tmp_path / "routed", TestServer)
    fast = await _replay(tmp_path / "fast", ApiTestServer)
    codes = [201, 409, 200, 200, 200, 404, 404, 405, 422, 401, 404, 200, 200, 200]
    assert [s for s, _ in routed[:-1]] == codes
    for (method, path, _, _), r, f in zip(REQUESTS, routed, fast, strict=False):
        assert f == r, f"{method} {path}: fast path {f} != router {r}"
    assert fast[-1] == routed[-1]  # the same requests counted under the same verbs and codes
    assert any('verb="create"' in line and 'code="201"' in line for line in fast[-1][1]), fast[-1]


async def test_expect_100_continue_takes_the_router_path(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/fleetlet.db", compaction_interval=0)
    try:
        async with TestClient(ApiTestServer(create_app(store))) as client:
            admin = await ensure_admin(store, tmp_path / "data", "http://test", tmp_path / "config.yaml")
            hdrs = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
            resp = await client.post(
                "/api/v1/namespaces/default/configmaps", data=json.dumps(CM), headers=hdrs, expect100=True
            )
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["metadata"]["name"] == "c1"
    finally:
        await store.close()
