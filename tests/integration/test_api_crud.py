"""CRUD over HTTP for every kind: status split, generation, conflicts, patch, delete, binding,
selectors, pagination and the error Statuses (400, 404, 409, 413, 415, 422)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_api_harness import Api, device, start_api, workload

NS = "/api/v1/namespaces/default"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with start_api(tmp_path, max_body=64 * 1024) as a:
        yield a


MINIMAL: dict[str, tuple[str, dict[str, Any]]] = {
    "namespaces": ("/api/v1/namespaces", {"metadata": {"name": "team-a"}}),
    "gateways": ("/api/v1/gateways", {"metadata": {"name": "gw1"}, "spec": {"unschedulable": False}}),
    "devices": ("/api/v1/devices", device("dev1")),
    "workloads": (f"{NS}/workloads", workload("web")),
    "deployments": (
        f"{NS}/deployments",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": workload("x")["spec"]},
            },
        },
    ),
    "secrets": (f"{NS}/secrets", {"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}),
    "configmaps": (f"{NS}/configmaps", {"metadata": {"name": "cfg"}, "data": {"a": "1"}}),
    "events": (
        f"{NS}/events",
        {
            "metadata": {"name": "ev1"},
            "involvedObject": {"kind": "Workload", "name": "web"},
            "reason": "Started",
            "message": "started",
        },
    ),
    "leases": (
        "/api/v1/namespaces/fleetlet-node-lease/leases",
        {"metadata": {"name": "gw1"}, "spec": {"holderIdentity": "gw1", "leaseDurationSeconds": 40}},
    ),
    "tokens": ("/api/v1/tokens", {"metadata": {"name": "ci"}, "spec": {"role": "viewer"}}),
}


@pytest.mark.parametrize("plural", sorted(MINIMAL))
async def test_crud_every_kind(api: Api, plural: str) -> None:
    coll, body = MINIMAL[plural]
    name = body["metadata"]["name"]
    created = await api.ok("POST", coll, body)
    assert created["metadata"]["name"] == name
    assert created["metadata"]["resourceVersion"]
    assert created["metadata"]["generation"] == 1
    item = f"{coll}/{name}"
    got = await api.ok("GET", item)
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    listed = await api.ok("GET", coll)
    assert name in [i["metadata"]["name"] for i in listed["items"]]
    assert listed["kind"].endswith("List") and listed["apiVersion"] == "fleetlet.io/v1"
    patched = await api.ok(
        "PATCH",
        item,
        {"metadata": {"labels": {"touched": "yes"}}},
        content_type="application/merge-patch+json",
    )
    assert patched["metadata"]["labels"]["touched"] == "yes"
    replaced = dict(patched)
    replaced["metadata"] = {**patched["metadata"], "annotations": {"note": "put"}}
    put = await api.ok("PUT", item, replaced)
    assert put["metadata"]["annotations"] == {"note": "put"}
    assert put["metadata"]["generation"] == 1  # metadata-only changes never bump generation
    deleted = await api.call("DELETE", item)
    assert deleted.status == 200
    after = await api.call("GET", item)
    if plural == "namespaces":  # the namespace controller finishes the deletion
        assert after.body["status"]["phase"] == "Terminating"
        assert after.body["metadata"]["deletionTimestamp"]
    else:
        assert after.status == 404 and after.body["reason"] == "NotFound"


async def test_create_defaults(api: Api) -> None:
    wl = await api.ok("POST", f"{NS}/workloads", workload("web"))
    assert wl["spec"]["restartPolicy"] == "Always"
    assert wl["status"] == {"phase": "Pending"}
    dev = await api.ok("POST", "/api/v1/devices", device("esp", board="esp32-s3"))
    assert dev["status"]["phase"] == "Unknown"
    assert dev["spec"]["arch"] == "xtensawin" and dev["spec"]["runtimes"] == ["micropython"]
    assert set(dev["spec"]["allocatable"]) == {"memory", "cpu", "flash"}
    assert set(dev["spec"]["capacity"]) == {"memory", "cpu", "flash"}
    dep = await api.ok("POST", f"{NS}/deployments", MINIMAL["deployments"][1])
    assert dep["spec"]["strategy"] == {
        "waves": ["100%"],
        "maxUnavailable": "25%",
        "minReadySeconds": 0,
        "failureThreshold": 0.5,
        "autoRollback": True,
    }
    assert dep["spec"]["placement"] == {"mode": "Replicas", "replicas": 1}
    assert dep["spec"]["revisionHistoryLimit"] == 10
    sec = await api.ok("POST", f"{NS}/secrets", MINIMAL["secrets"][1])
    assert "stringData" not in sec
    assert base64.b64decode(sec["data"]["password"]) == b"hunter2"
    mp = workload("mp")
    mp["spec"] = {"runtime": "micropython", "app": {"modules": [{"name": "main.py", "source": "print(1)"}]}}
    created = await api.ok("POST", f"{NS}/workloads", mp)
    assert created["spec"]["app"]["entry"] == "main"
    # A namespaced kind posted to the cluster-wide path lands in "default".
    await api.ok("POST", "/api/v1/configmaps", {"metadata": {"name": "c2"}, "data": {}})
    assert (await api.ok("GET", f"{NS}/configmaps/c2"))["metadata"]["namespace"] == "default"


async def test_unknown_board_is_422(api: Api) -> None:
    r = await api.call("POST", "/api/v1/devices", device("d", board="no-such-board"))
    assert r.status == 422
    assert r.body["details"]["causes"][0]["field"] == "spec.board"
    assert "no-such-board" in r.message


async def test_status_subresource_split_and_generation(api: Api) -> None:
    wl = await api.ok("POST", f"{NS}/workloads", workload("web"))
    # PUT of the object ignores status; a spec change bumps generation.
    wl["status"] = {"phase": "Running"}
    wl["spec"]["priority"] = 5
    put = await api.ok("PUT", f"{NS}/workloads/web", wl)
    assert put["status"]["phase"] == "Pending" and put["metadata"]["generation"] == 2
    # .../status changes only status, and never generation.
    put["status"] = {"phase": "Running", "restarts": 1}
    put["spec"]["priority"] = 99
    st = await api.ok("PUT", f"{NS}/workloads/web/status", put)
    assert st["status"]["phase"] == "Running" and st["spec"]["priority"] == 5
    assert st["metadata"]["generation"] == 2
    st2 = await api.ok("PATCH", f"{NS}/workloads/web/status", {"status": {"message": "hi"}})
    assert st2["status"] == {"phase": "Running", "restarts": 1, "message": "hi"}
    # PATCH of the object ignores status.
    p = await api.ok("PATCH", f"{NS}/workloads/web", {"status": {"phase": "Failed"}, "spec": {"priority": 7}})
    assert p["status"]["phase"] == "Running" and p["metadata"]["generation"] == 3
    assert (await api.ok("GET", f"{NS}/workloads/web/status"))["status"]["message"] == "hi"


async def test_conflicts_and_already_exists(api: Api) -> None:
    wl = await api.ok("POST", f"{NS}/workloads", workload("web"))
    dup = await api.call("POST", f"{NS}/workloads", workload("web"))
    assert (dup.status, dup.body["reason"]) == (409, "AlreadyExists")
    await api.ok("PATCH", f"{NS}/workloads/web", {"spec": {"priority": 1}})
    stale = await api.call("PUT", f"{NS}/workloads/web", wl)
    assert (stale.status, stale.body["reason"]) == (409, "Conflict")
    stale_patch = await api.call(
        "PATCH",
        f"{NS}/workloads/web",
        {"metadata": {"resourceVersion": wl["metadata"]["resourceVersion"]}, "spec": {"priority": 2}},
    )
    assert stale_patch.status == 409
    stale_status = await api.call(
        "PUT",
        f"{NS}/workloads/web/status",
        {"metadata": {"resourceVersion": wl["metadata"]["resourceVersion"]}, "status": {"phase": "Running"}},
    )
    assert stale_status.status == 409


async def test_merge_patch_removes_with_null(api: Api) -> None:
    await api.ok(
        "POST",
        f"{NS}/configmaps",
        {"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}},
    )
    p = await api.ok(
        "PATCH",
        f"{NS}/configmaps/c",
        {"metadata": {"labels": {"a": None}}, "data": {"y": None}},
        content_type="application/merge-patch+json",
    )
    assert p["metadata"]["labels"] == {"b": "2"} and p["data"] == {"x": "1"}
    r = await api.call("PATCH", f"{NS}/configmaps/c", raw="[]", content_type="application/json-patch+json")
    assert r.status == 415


async def test_delete_propagation_and_preconditions(api: Api) -> None:
    for name in ("fg", "orph", "pre"):
        await api.ok("POST", f"{NS}/configmaps", {"metadata": {"name": name}, "data": {}})
    fg = await api.ok("DELETE", f"{NS}/configmaps/fg", params={"propagationPolicy": "Foreground"})
    assert fg["metadata"]["finalizers"] == ["foregroundDeletion"] and fg["metadata"]["deletionTimestamp"]
    orph = await api.ok(
        "DELETE", f"{NS}/configmaps/orph", {"kind": "DeleteOptions", "propagationPolicy": "Orphan"}
    )
    assert orph["metadata"]["finalizers"] == ["orphan"]
    # Removing the last finalizer (what the garbage collector does) completes the deletion.
    await api.ok("PATCH", f"{NS}/configmaps/fg", {"metadata": {"finalizers": None}})
    assert (await api.call("GET", f"{NS}/configmaps/fg")).status == 404
    bad = await api.call("DELETE", f"{NS}/configmaps/pre", {"preconditions": {"uid": "not-the-uid"}})
    assert bad.status == 409
    wrong = await api.call("DELETE", f"{NS}/configmaps/pre", params={"propagationPolicy": "Sideways"})
    assert wrong.status == 400
    assert (await api.call("DELETE", "/api/v1/namespaces/default")).status == 403


async def test_binding(api: Api) -> None:
    await api.ok("POST", f"{NS}/workloads", workload("web"))
    await api.ok("POST", "/api/v1/devices", device("dev1", gateway="gw7"))
    binding = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Binding",
        "metadata": {"name": "web"},
        "target": {"kind": "Device", "name": "dev1"},
    }
    missing = await api.call(
        "POST", f"{NS}/workloads/web/binding", {**binding, "target": {"kind": "Device", "name": "nope"}}
    )
    assert missing.status == 404
    r = await api.call("POST", f"{NS}/workloads/web/binding", binding)
    assert r.status == 201 and r.body["status"] == "Success"
    wl = await api.ok("GET", f"{NS}/workloads/web")
    assert (wl["spec"]["deviceName"], wl["spec"]["gatewayName"]) == ("dev1", "gw7")
    assert wl["status"]["phase"] == "Scheduled"
    again = await api.call("POST", f"{NS}/workloads/web/binding", binding)
    assert again.status == 409
    # deviceName is set only by binding.
    wl["spec"]["deviceName"] = "other"
    r = await api.call("PUT", f"{NS}/workloads/web", wl)
    assert r.status == 422 and "spec.deviceName" in r.message
    ghost = {"target": {"kind": "Device", "name": "dev1"}}
    assert (await api.call("POST", f"{NS}/workloads/ghost/binding", ghost)).status == 404


async def test_binding_list_answers_each_item(api: Api) -> None:
    for name in ("a", "b", "taken"):
        await api.ok("POST", f"{NS}/workloads", workload(name))
    await api.ok("POST", "/api/v1/devices", device("dev1", gateway="gw7"))
    await api.ok("POST", f"{NS}/workloads/taken/binding", {"target": {"kind": "Device", "name": "dev1"}})

    def item(name: str | None, dev: str = "dev1") -> dict[str, Any]:
        return {"metadata": {"name": name} if name else {}, "target": {"kind": "Device", "name": dev}}

    items = [item("a"), item("taken"), item("ghost"), item("b", "nope"), item(None), item("b")]
    r = await api.ok("POST", f"{NS}/bindings", {"kind": "BindingList", "items": items})
    assert r["kind"] == "BindingList"
    got = [(i["metadata"]["name"], i["status"]["code"]) for i in r["items"]]
    assert got == [("a", 201), ("taken", 409), ("ghost", 404), ("b", 404), (None, 422), ("b", 201)]
    assert "already bound" in r["items"][1]["status"]["message"]
    for name in ("a", "b"):
        wl = await api.ok("GET", f"{NS}/workloads/{name}")
        assert (wl["spec"]["deviceName"], wl["status"]["phase"]) == ("dev1", "Scheduled")
    # Kubernetes' form of the collection: one Binding named after the workload.
    await api.ok("POST", f"{NS}/workloads", workload("c"))
    one = await api.call("POST", f"{NS}/bindings", {"kind": "Binding", **item("c")})
    assert one.status == 201 and one.body["status"] == "Success"
    assert (await api.call("POST", f"{NS}/bindings", {"kind": "Binding", **item("c")})).status == 409


async def test_binding_list_refuses_bad_requests(api: Api) -> None:
    await api.ok("POST", "/api/v1/devices", device("dev1", gateway="gw7"))
    assert (await api.call("GET", f"{NS}/bindings")).status == 405
    assert (await api.call("POST", f"{NS}/bindings", {"kind": "ConfigMap"})).status == 400
    assert (await api.call("POST", f"{NS}/bindings", {"kind": "BindingList", "items": "x"})).status == 422
    many = [{"metadata": {"name": f"w{i}"}, "target": {"name": "dev1"}} for i in range(1001)]
    assert (await api.call("POST", f"{NS}/bindings", {"kind": "BindingList", "items": many})).status == 422
    gw = await api.token("gateway", gateway="gw7")
    body = {"kind": "BindingList", "items": []}
    assert (await api.call("POST", f"{NS}/bindings", body, token=gw)).status == 403
    viewer = await api.token("viewer")
    assert (await api.call("POST", f"{NS}/bindings", body, token=viewer)).status == 403


async def test_selectors_and_pagination(api: Api) -> None:
    for i in range(7):
        body = workload(f"w{i}")
        body["metadata"]["labels"] = {"tier": "a" if i % 2 else "b", "i": str(i)}
        await api.ok("POST", f"{NS}/workloads", body)
    a = await api.ok("GET", f"{NS}/workloads", params={"labelSelector": "tier=a"})
    assert [i["metadata"]["name"] for i in a["items"]] == ["w1", "w3", "w5"]
    notin = await api.ok("GET", "/api/v1/workloads", params={"labelSelector": "tier=b,i notin (0,2)"})
    assert [i["metadata"]["name"] for i in notin["items"]] == ["w4", "w6"]
    f = await api.ok("GET", f"{NS}/workloads", params={"fieldSelector": "metadata.name=w2"})
    assert [i["metadata"]["name"] for i in f["items"]] == ["w2"]
    phase = await api.ok("GET", f"{NS}/workloads", params={"fieldSelector": "status.phase!=Pending"})
    assert phase["items"] == []
    names: list[str] = []
    cont: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"continue": cont} if cont else {})}
        page = await api.ok("GET", f"{NS}/workloads", params=params)
        names += [i["metadata"]["name"] for i in page["items"]]
        pages += 1
        cont = page["metadata"].get("continue")
        if not cont:
            break
        assert page["metadata"]["remainingItemCount"] == 7 - len(names)
    assert pages == 3 and names == [f"w{i}" for i in range(7)]
    bad = await api.call("GET", f"{NS}/workloads", params={"labelSelector": "in in in"})
    assert bad.status == 400
    bad_limit = await api.call("GET", f"{NS}/workloads", params={"limit": "many"})
    assert bad_limit.status == 400


async def test_invalid_names_the_field_path(api: Api) -> None:
    body = workload("web")
    del body["spec"]["containers"][0]["image"]
    body["spec"]["bogus"] = True
    r = await api.call("POST", f"{NS}/workloads", body)
    assert r.status == 422 and r.body["reason"] == "Invalid"
    fields = {c["field"] for c in r.body["details"]["causes"]}
    assert fields == {"spec.containers[0].image", "spec.bogus"}
    assert "spec.containers[0].image: Required value" in r.message
    r = await api.call("POST", f"{NS}/workloads", workload("web", runtime="rust"))
    assert r.body["details"]["causes"][0]["message"] == (
        'spec.runtime: Unsupported value: "rust": supported values: "docker", "micropython"'
    )
    r = await api.call(
        "POST", f"{NS}/workloads", {"metadata": {"name": "x"}, "spec": {"runtime": "micropython"}}
    )
    assert r.status == 422 and "spec.app: Required value" in r.message
    r = await api.call("POST", f"{NS}/secrets", {"metadata": {"name": "s"}, "data": {"k": "%%%"}})
    assert r.status == 422 and "data[k]" in r.message


async def test_malformed_and_oversized_bodies(api: Api) -> None:
    r = await api.call("POST", f"{NS}/workloads", raw="{not json", content_type="application/json")
    assert r.status == 400 and r.body["kind"] == "Status" and "malformed JSON" in r.message
    r = await api.call("POST", f"{NS}/workloads", raw="a: [unclosed", content_type="application/yaml")
    assert r.status == 400 and "malformed YAML" in r.message
    r = await api.call("POST", f"{NS}/workloads", raw="[1, 2]", content_type="application/json")
    assert r.status == 400
    big = workload("big")
    big["metadata"]["annotations"] = {"blob": "x" * (70 * 1024)}
    r = await api.call("POST", f"{NS}/workloads", big)
    assert r.status == 413 and r.body["reason"] == "RequestEntityTooLarge"
    r = await api.call("POST", f"{NS}/workloads", raw="<xml/>", content_type="application/xml")
    assert r.status == 415
    yaml_body = (
        "metadata:\n  name: from-yaml\nspec:\n  runtime: docker\n  containers:\n  - {name: a, image: b}\n"
    )
    r = await api.call("POST", f"{NS}/workloads", raw=yaml_body, content_type="application/yaml")
    assert r.status == 201 and r.body["metadata"]["name"] == "from-yaml"


async def test_paths_and_methods(api: Api) -> None:
    assert (await api.call("GET", "/api/v1/widgets")).status == 404
    assert (await api.call("GET", "/api/v1/workloads/web")).status == 404  # namespaced kind
    assert (await api.call("GET", "/api/v1/devices/x/binding")).status == 404
    r = await api.call("DELETE", f"{NS}/workloads")
    assert r.status == 405 and r.body["kind"] == "Status"
    assert (await api.call("GET", "/nowhere")).status == 404
    mismatch = await api.call(
        "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c", "namespace": "other"}}
    )
    assert mismatch.status == 400


async def test_namespace_rules(api: Api) -> None:
    r = await api.call("POST", "/api/v1/namespaces/ghost/configmaps", {"metadata": {"name": "c"}})
    assert r.status == 404 and 'namespaces "ghost" not found' in r.message
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    await api.ok("POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "keep"}})
    await api.ok("DELETE", "/api/v1/namespaces/team")
    r = await api.call("POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "c"}})
    assert r.status == 403 and "being terminated" in r.message
    # Deleting content in a terminating namespace is fine (that is how it empties).
    assert (await api.call("DELETE", "/api/v1/namespaces/team/configmaps/keep")).status == 200


async def test_token_create_returns_plaintext_once(api: Api) -> None:
    r = await api.ok(
        "POST", "/api/v1/tokens", {"metadata": {"name": "ci"}, "spec": {"role": "viewer", "ttlSeconds": 3600}}
    )
    token = r["status"]["token"]
    assert token.startswith("flt_ci_")
    assert "ttlSeconds" not in r["spec"] and r["spec"]["expiresAt"]
    stored = await api.ok("GET", "/api/v1/tokens/ci")
    assert "status" not in stored or "token" not in stored.get("status", {})
    assert token not in (await api.call("GET", "/api/v1/tokens")).text
    assert (await api.call("GET", "/api/v1/devices", token=token)).status == 200
    r2 = await api.call("POST", "/api/v1/tokens", {"metadata": {"name": "gw"}, "spec": {"role": "gateway"}})
    assert r2.status == 422 and "spec.gateway: Required value" in r2.message
