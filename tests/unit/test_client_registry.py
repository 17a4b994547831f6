"""The resource registry mirrors docs/API.md and accepts kubectl-style aliases."""

from __future__ import annotations

import pytest
from fleetlet.server.client import REGISTRY, UnknownResource, resource_path

# (alias, kind) pairs a kubectl user would type.
ALIASES = [
    ("wl", "Workload"),
    ("workload", "Workload"),
    ("workloads", "Workload"),
    ("Workload", "Workload"),
    ("dev", "Device"),
    ("device", "Device"),
    ("devices", "Device"),
    ("gw", "Gateway"),
    ("gateways", "Gateway"),
    ("deploy", "Deployment"),
    ("deployments", "Deployment"),
    ("cm", "ConfigMap"),
    ("configmap", "ConfigMap"),
    ("secret", "Secret"),
    ("secrets", "Secret"),
    ("ev", "Event"),
    ("events", "Event"),
    ("ns", "Namespace"),
    ("namespace", "Namespace"),
    ("lease", "Lease"),
    ("leases", "Lease"),
    ("token", "Token"),
    ("tokens", "Token"),
    ("workloads.fleetlet.io", "Workload"),
    ("WL", "Workload"),
]


@pytest.mark.parametrize(("alias", "kind"), ALIASES)
def test_aliases_resolve(alias: str, kind: str) -> None:
    assert REGISTRY.resolve(alias).kind == kind


def test_table_matches_api_doc() -> None:
    scope = {rt.kind: (rt.plural, rt.namespaced, rt.has_status) for rt in REGISTRY}
    assert scope == {
        "Namespace": ("namespaces", False, True),
        "Gateway": ("gateways", False, True),
        "Device": ("devices", False, True),
        "Workload": ("workloads", True, True),
        "Deployment": ("deployments", True, True),
        "Secret": ("secrets", True, False),
        "ConfigMap": ("configmaps", True, False),
        "Event": ("events", True, False),
        "Lease": ("leases", True, False),
        "Token": ("tokens", False, False),
    }


def test_unknown_kind_message_is_kubectls() -> None:
    with pytest.raises(UnknownResource) as info:
        REGISTRY.resolve("foo")
    assert str(info.value) == 'the server doesn\'t have a resource type "foo"'


def test_paths() -> None:
    wl = REGISTRY.resolve("wl")
    assert resource_path(wl, "prod") == "/api/v1/namespaces/prod/workloads"
    assert resource_path(wl, None) == "/api/v1/workloads"
    assert resource_path(wl, "prod", "web", "binding") == "/api/v1/namespaces/prod/workloads/web/binding"
    assert resource_path(wl, None, "web") == "/api/v1/namespaces/default/workloads/web"
    dev = REGISTRY.resolve("dev")
    assert resource_path(dev, "ignored", "pi-1", "status") == "/api/v1/devices/pi-1/status"
    ns = REGISTRY.resolve("ns")
    assert resource_path(ns, None, "prod") == "/api/v1/namespaces/prod"
    assert resource_path(wl, "a b", "x/y") == "/api/v1/namespaces/a%20b/workloads/x%2Fy"


def test_qualified_name() -> None:
    assert REGISTRY.resolve("deploy").qualified == "deployment.fleetlet.io"
