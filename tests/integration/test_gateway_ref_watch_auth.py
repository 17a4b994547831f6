"""A gateway token may list and watch a Secret or ConfigMap only one at a time, by name, in its
namespace, and only one that a Workload bound to one of its devices references (Kubernetes' node
authorizer with the kubelet's Watch strategy). Everything else stays 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.test_api_harness import Api, device, start_api, workload

NS = "/api/v1/namespaces/default"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with start_api(tmp_path) as a:
        yield a


def _by_name(name: str) -> dict[str, str]:
    return {"fieldSelector": f"metadata.name={name}"}


async def test_gateway_lists_and_watches_only_its_referenced_objects_by_name(api: Api) -> None:
    gw1 = await api.token("gateway", gateway="gw1")
    for name, gw in (("mine", "gw1"), ("theirs", "gw2")):
        await api.ok("POST", "/api/v1/devices", device(name, gateway=gw))
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    bound = workload("bound")
    bound["spec"]["containers"][0]["env"] = [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
    ]
    other = workload("other")
    other["spec"]["containers"][0]["env"] = [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "gw2-only", "key": "pw"}}}
    ]
    for wl, dev in ((bound, "mine"), (other, "theirs")):
        name = wl["metadata"]["name"]
        await api.ok("POST", f"{NS}/workloads", wl)
        await api.ok("POST", f"{NS}/workloads/{name}/binding", {"target": {"kind": "Device", "name": dev}})
    for ns in ("default", "team"):
        for name in ("db", "unrelated", "gw2-only"):
            body = {"metadata": {"name": name}, "stringData": {"pw": "x"}}
            await api.ok("POST", f"/api/v1/namespaces/{ns}/secrets", body)
        await api.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "settings"}})

    # Allowed: the referenced object alone, by name, in its namespace; list and watch.
    listed = await api.call("GET", f"{NS}/secrets", token=gw1, params=_by_name("db"))
    assert listed.status == 200, listed.text
    assert [s["metadata"]["name"] for s in listed.body["items"]] == ["db"]
    events = await api.watch_lines(f"{NS}/secrets", {**_by_name("db"), "timeoutSeconds": "0.2"}, token=gw1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "db")]
    cm = await api.call(
        "GET",
        f"{NS}/configmaps",
        token=gw1,
        params={"watch": "1", **_by_name("settings"), "timeoutSeconds": "0.1"},
    )
    assert cm.status == 200, cm.text

    async def status(path: str, params: dict[str, str] | None, watch: bool) -> int:
        q = dict(params or {})
        if watch:
            q.update(watch="true", timeoutSeconds="0.1")
        return (await api.call("GET", path, token=gw1, params=q)).status

    refused: list[tuple[str, dict[str, str] | None]] = [
        (f"{NS}/secrets", None),  # no selector
        (f"{NS}/secrets", {"fieldSelector": "spec.gatewayName=gw1"}),  # not a name
        (f"{NS}/secrets", _by_name("unrelated")),  # nobody references it
        (f"{NS}/secrets", _by_name("gw2-only")),  # another gateway's workload references it
        (f"{NS}/secrets", {"fieldSelector": "metadata.name!=db"}),  # everything but it
        (f"{NS}/configmaps", _by_name("db")),  # the name of a referenced Secret, as a ConfigMap
        ("/api/v1/namespaces/team/secrets", _by_name("db")),  # same name, another namespace
        ("/api/v1/secrets", _by_name("db")),  # all namespaces
    ]
    for path, params in refused:
        for watch in (False, True):
            assert await status(path, params, watch) == 403, (path, params, watch)
    forbidden = await api.call("GET", f"{NS}/secrets", token=gw1, params=_by_name("unrelated"))
    assert "metadata.name=<name>" in forbidden.message

    # The reference goes (unbound by deletion): so does the permission.
    await api.ok("DELETE", f"{NS}/workloads/bound")
    for path, name in ((f"{NS}/secrets", "db"), (f"{NS}/configmaps", "settings")):
        for watch in (False, True):
            assert await status(path, _by_name(name), watch) == 403, (path, watch)
    assert (await api.call("GET", f"{NS}/secrets/db", token=gw1)).status == 403
