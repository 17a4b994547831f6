"""apply's three-way merge: keeps fields others set, removes fields the user removed."""

from __future__ import annotations

import copy
from typing import Any

from fleetlet.server.cli.merge import LAST_APPLIED, merge_patch, plan_update, with_last_applied


def manifest(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": spec,
    }


def live_from(applied: dict[str, Any], **server_spec: Any) -> dict[str, Any]:
    """What the server holds after creating ``applied`` and others writing ``server_spec``."""
    live = copy.deepcopy(with_last_applied(applied))
    live["metadata"].update({"namespace": "default", "uid": "u1", "resourceVersion": "7", "generation": 1})
    live["spec"].update(server_spec)
    live["status"] = {"phase": "Running"}
    return live


def test_unchanged_even_with_server_defaults() -> None:
    m = manifest(runtime="docker", containers=[{"name": "c", "image": "busybox"}])
    live = live_from(m, deviceName="pi-1", restartPolicy="Always")
    live["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"  # a default inside a list
    assert plan_update(live, m) is None


def test_change_keeps_fields_set_by_others() -> None:
    old = manifest(runtime="docker", containers=[{"name": "c", "image": "busybox:1"}])
    live = live_from(old, deviceName="pi-1", gatewayName="gw")
    body = plan_update(live, manifest(runtime="docker", containers=[{"name": "c", "image": "busybox:2"}]))
    assert body is not None
    assert body["spec"]["containers"] == [{"name": "c", "image": "busybox:2"}]
    assert body["spec"]["deviceName"] == "pi-1" and body["spec"]["gatewayName"] == "gw"
    assert body["metadata"]["resourceVersion"] == "7"
    assert "status" not in body
    assert '"busybox:2"' in body["metadata"]["annotations"][LAST_APPLIED]


def test_removed_field_and_label_are_deleted() -> None:
    old = manifest(runtime="docker", nodeSelector={"zone": "a"})
    old["metadata"]["labels"]["tier"] = "front"
    live = live_from(old, deviceName="pi-1")
    body = plan_update(live, manifest(runtime="docker"))
    assert body is not None
    assert "nodeSelector" not in body["spec"]
    assert body["metadata"]["labels"] == {"app": "web"}
    assert body["spec"]["deviceName"] == "pi-1"


def test_object_created_without_apply_is_configured_once() -> None:
    m = manifest(runtime="docker")
    live = copy.deepcopy(m)
    live["metadata"]["resourceVersion"] = "3"
    body = plan_update(live, m)
    assert body is not None and LAST_APPLIED in body["metadata"]["annotations"]
    assert plan_update({**body, "metadata": {**body["metadata"], "resourceVersion": "4"}}, m) is None


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }
    assert merge_patch({"a": 1}, {"a": {"x": None}}) == {"a": {}}
