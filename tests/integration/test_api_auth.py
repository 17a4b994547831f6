"""Authentication (401), the role boundaries (403) including the gateway identity rules,
non-resource endpoints, and the admin bootstrap."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from fleetlet.server.auth import ensure_admin, hash_token
from fleetlet.server.store import Store

from tests.integration.test_api_harness import Api, device, start_api, workload

NS = "/api/v1/namespaces/default"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with start_api(tmp_path) as a:
        yield a


async def test_unauthenticated_requests(api: Api) -> None:
    assert (await api.call("GET", "/healthz", token=None)).status == 200
    for path in ("/readyz", "/metrics", "/version", "/openapi.json", "/api/v1/devices"):
        r = await api.call("GET", path, token=None)
        assert r.status == 401 and r.body["reason"] == "Unauthorized", path
    unknown = await api.call("GET", "/api/v1/devices", token="flt_nobody_0123456789")
    assert unknown.status == 401 and "unknown token" in unknown.message
    forged = await api.call("GET", "/api/v1/devices", token="flt_admin_notthesecret")
    assert forged.status == 401
    malformed = await api.call("GET", "/api/v1/devices", token="garbage")
    assert malformed.status == 401


async def test_expired_and_deleted_tokens(api: Api) -> None:
    await api.ok(
        "POST",
        "/api/v1/tokens",
        {
            "metadata": {"name": "old"},
            "spec": {
                "role": "admin",
                "tokenHash": hash_token("flt_old_secret"),
                "expiresAt": "2020-01-01T00:00:00Z",
            },
        },
    )
    r = await api.call("GET", "/api/v1/devices", token="flt_old_secret")
    assert r.status == 401 and r.message == "Unauthorized: token expired"
    tok = await api.token("viewer")
    assert (await api.call("GET", "/api/v1/devices", token=tok)).status == 200
    name = tok.split("_")[1]
    await api.ok("DELETE", f"/api/v1/tokens/{name}")
    assert (await api.call("GET", "/api/v1/devices", token=tok)).status == 401
    # The same token id again, with another secret: the secret verified before is refused.
    other = f"flt_{name}_anothersecret"
    body = {"metadata": {"name": name}, "spec": {"role": "viewer", "tokenHash": hash_token(other)}}
    await api.ok("POST", "/api/v1/tokens", body)
    assert (await api.call("GET", "/api/v1/devices", token=other)).status == 200
    assert (await api.call("GET", "/api/v1/devices", token=tok)).status == 401


async def test_readyz_metrics_version_openapi_with_token(api: Api) -> None:
    viewer = await api.token("viewer")
    assert (await api.call("GET", "/readyz", token=viewer)).text == "ok"
    await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "c"}})
    metrics = (await api.call("GET", "/metrics", token=viewer)).text
    assert 'fleetlet_apiserver_requests_total{code="201",resource="configmaps",verb="create"} 1.0' in metrics
    assert f"fleetlet_store_revision {float(api.store.revision)}" in metrics
    assert (
        "fleetlet_store_commits_total" in metrics and "fleetlet_apiserver_request_duration_seconds" in metrics
    )
    version = await api.ok("GET", "/version", token=viewer)
    assert version["apiVersion"] == "fleetlet.io/v1" and version["storeBackend"] == "sqlite"
    doc = await api.ok("GET", "/openapi.json", token=viewer)
    assert doc["openapi"].startswith("3.")
    for kind in (
        "Namespace",
        "Gateway",
        "Device",
        "Workload",
        "Deployment",
        "Secret",
        "ConfigMap",
        "Event",
        "Lease",
        "Token",
    ):
        assert kind in doc["components"]["schemas"]
    assert "/api/v1/namespaces/{namespace}/workloads/{name}/binding" in doc["paths"]
    assert "/api/v1/devices/{name}/status" in doc["paths"]


async def test_viewer_boundaries(api: Api) -> None:
    viewer = await api.token("viewer")
    await api.ok("POST", f"{NS}/secrets", {"metadata": {"name": "s"}, "stringData": {"a": "b"}})
    assert (await api.call("GET", f"{NS}/workloads", token=viewer)).status == 200
    assert (await api.call("GET", "/api/v1/devices", token=viewer)).status == 200
    for method, path in (("GET", f"{NS}/secrets"), ("GET", f"{NS}/secrets/s"), ("GET", "/api/v1/tokens")):
        r = await api.call(method, path, token=viewer)
        assert r.status == 403 and r.body["reason"] == "Forbidden", path
    r = await api.call("POST", f"{NS}/workloads", workload("w"), token=viewer)
    assert r.status == 403 and "cannot create" in r.message


async def test_operator_boundaries(api: Api) -> None:
    op = await api.token("operator")
    assert (await api.call("POST", f"{NS}/workloads", workload("w"), token=op)).status == 201
    assert (await api.call("POST", f"{NS}/secrets", {"metadata": {"name": "s"}}, token=op)).status == 201
    assert (await api.call("GET", "/api/v1/devices", token=op)).status == 200
    assert (await api.call("POST", "/api/v1/devices", device("d"), token=op)).status == 403
    assert (await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "n"}}, token=op)).status == 403
    assert (await api.call("GET", "/api/v1/tokens", token=op)).status == 403
    assert (await api.call("POST", "/api/v1/tokens", {"spec": {"role": "admin"}}, token=op)).status == 403
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    scoped = await api.token("operator", namespaces=["team"])
    ok = await api.call(
        "POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "c"}}, token=scoped
    )
    assert ok.status == 201
    assert (await api.call("GET", f"{NS}/configmaps", token=scoped)).status == 403
    assert (await api.call("GET", "/api/v1/configmaps", token=scoped)).status == 403  # all namespaces
    assert (
        await api.call("POST", f"{NS}/configmaps", {"metadata": {"name": "c"}}, token=scoped)
    ).status == 403


async def test_gateway_identity_rules(api: Api) -> None:
    gw = await api.token("gateway", gateway="gw1")
    # Its own Gateway and Lease.
    assert (await api.call("POST", "/api/v1/gateways", {"metadata": {"name": "gw1"}}, token=gw)).status == 201
    assert (await api.call("POST", "/api/v1/gateways", {"metadata": {"name": "gw2"}}, token=gw)).status == 403
    await api.ok("POST", "/api/v1/gateways", {"metadata": {"name": "gw2"}})
    assert (await api.call("GET", "/api/v1/gateways/gw2", token=gw)).status == 403
    st = await api.call("PATCH", "/api/v1/gateways/gw1/status", {"status": {"deviceCount": 2}}, token=gw)
    assert st.status == 200
    lease = {"metadata": {"name": "gw1"}, "spec": {"holderIdentity": "gw1", "leaseDurationSeconds": 40}}
    leases = "/api/v1/namespaces/fleetlet-node-lease/leases"
    assert (await api.call("POST", leases, lease, token=gw)).status == 201
    other_lease = {**lease, "metadata": {"name": "gw2"}}
    assert (await api.call("POST", leases, other_lease, token=gw)).status == 403
    # Devices: only its own, and list/watch only pinned to itself.
    await api.ok("POST", "/api/v1/devices", device("mine", gateway="gw1"))
    await api.ok("POST", "/api/v1/devices", device("theirs", gateway="gw2"))
    assert (await api.call("GET", "/api/v1/devices", token=gw)).status == 403
    assert (
        await api.call("GET", "/api/v1/devices", token=gw, params={"fieldSelector": "spec.gateway=gw2"})
    ).status == 403
    mine = await api.call("GET", "/api/v1/devices", token=gw, params={"fieldSelector": "spec.gateway=gw1"})
    assert mine.status == 200 and [d["metadata"]["name"] for d in mine.body["items"]] == ["mine"]
    w = await api.call(
        "GET",
        "/api/v1/devices",
        token=gw,
        params={"watch": "1", "fieldSelector": "spec.gateway=gw1", "timeoutSeconds": "0.1"},
    )
    assert w.status == 200
    assert (await api.call("GET", "/api/v1/devices/mine", token=gw)).status == 200
    assert (await api.call("GET", "/api/v1/devices/theirs", token=gw)).status == 403
    assert (
        await api.call("PATCH", "/api/v1/devices/mine/status", {"status": {"phase": "Online"}}, token=gw)
    ).status == 200
    assert (
        await api.call("PATCH", "/api/v1/devices/theirs/status", {"status": {"phase": "Online"}}, token=gw)
    ).status == 403
    assert (
        await api.call("PATCH", "/api/v1/devices/mine", {"spec": {"unschedulable": True}}, token=gw)
    ).status == 403
    assert (await api.call("DELETE", "/api/v1/devices/mine", token=gw)).status == 403
    # Workloads bound to it, and the Secrets/ConfigMaps they reference.
    spec_env = [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    bound = workload("bound")
    bound["spec"]["containers"][0]["env"] = spec_env
    bound["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "settings"}}]
    await api.ok("POST", f"{NS}/workloads", bound)
    await api.ok("POST", f"{NS}/workloads/bound/binding", {"target": {"kind": "Device", "name": "mine"}})
    await api.ok("POST", f"{NS}/workloads", workload("elsewhere"))
    for name in ("db", "unrelated"):
        await api.ok("POST", f"{NS}/secrets", {"metadata": {"name": name}, "stringData": {"pw": "x"}})
    await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": "settings"}, "data": {}})
    wl_sel = {"fieldSelector": "spec.gatewayName=gw1"}
    assert (await api.call("GET", "/api/v1/workloads", token=gw)).status == 403
    listed = await api.call("GET", "/api/v1/workloads", token=gw, params=wl_sel)
    assert [w["metadata"]["name"] for w in listed.body["items"]] == ["bound"]
    assert (await api.call("GET", f"{NS}/workloads/bound", token=gw)).status == 200
    assert (await api.call("GET", f"{NS}/workloads/elsewhere", token=gw)).status == 403
    assert (
        await api.call("PUT", f"{NS}/workloads/bound/status", {"status": {"phase": "Running"}}, token=gw)
    ).status == 200
    assert (await api.call("GET", f"{NS}/secrets/db", token=gw)).status == 200
    assert (await api.call("GET", f"{NS}/configmaps/settings", token=gw)).status == 200
    assert (await api.call("GET", f"{NS}/secrets/unrelated", token=gw)).status == 403
    assert (await api.call("GET", f"{NS}/secrets", token=gw)).status == 403
    # Events: create only.
    ev = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Device", "name": "mine"},
        "reason": "Online",
    }
    assert (await api.call("POST", f"{NS}/events", ev, token=gw)).status == 201
    assert (await api.call("GET", f"{NS}/events", token=gw)).status == 403
    assert (await api.call("GET", "/api/v1/namespaces", token=gw)).status == 403
    assert (await api.call("GET", "/api/v1/tokens", token=gw)).status == 403


async def test_bootstrap_writes_private_files_and_is_idempotent(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/b.db", compaction_interval=0)
    try:
        data = tmp_path / "data"
        config = tmp_path / "home" / ".config" / "fleetlet" / "config.yaml"
        token = await ensure_admin(store, data, "http://127.0.0.1:8080", config)
        token_file = data / "admin.token"
        for f in (token_file, config):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
        assert stat.S_IMODE(os.stat(config.parent).st_mode) == 0o700
        assert token_file.read_text().strip() == token
        assert yaml.safe_load(config.read_text()) == {"server": "http://127.0.0.1:8080", "token": token}
        stored = await store.get("tokens", "", "admin")
        assert stored["spec"]["role"] == "admin" and stored["spec"]["tokenHash"] == hash_token(token)
        assert token not in json.dumps(stored)
        rev = store.revision
        again = await ensure_admin(store, data, "http://127.0.0.1:8080", config)
        assert again == token and store.revision == rev  # no rotation, no write
        token_file.unlink()
        rotated = await ensure_admin(store, data, "http://127.0.0.1:8080", config)
        assert rotated != token
        assert (await store.get("tokens", "", "admin"))["spec"]["tokenHash"] == hash_token(rotated)
    finally:
        await store.close()
