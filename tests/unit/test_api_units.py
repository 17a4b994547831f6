"""Unit tests of the API building blocks: schemas and their messages, OpenAPI, paths, patches,
admission defaults, tokens and the listen address parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleetlet.schemas.api_schemas import kind_names
from fleetlet.server.api import admission
from fleetlet.server.api.app import openapi_document
from fleetlet.server.api.bodies import merge_patch
from fleetlet.server.api.main import parse_listen
from fleetlet.server.api.paths import parse_route
from fleetlet.server.api.resources import BY_KIND, KINDS
from fleetlet.server.api.status import ApiError
from fleetlet.server.api.validation import check_schemas, field_path, is_valid, schema_causes
from fleetlet.server.auth.rbac import workload_references
from fleetlet.server.auth.tokens import generate_token, parse_token


def wl(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"runtime": "docker", "containers": [{"name": "a", "image": "nginx"}]}
    base.update(spec)
    return {"apiVersion": "fleetlet.io/v1", "kind": "Workload", "metadata": {"name": "w"}, "spec": base}


def messages(kind: str, obj: dict[str, Any]) -> list[str]:
    return [c["message"] for c in schema_causes(kind, obj)]


def test_every_kind_has_a_valid_schema() -> None:
    check_schemas()
    assert {k.kind.lower() for k in KINDS} == set(kind_names())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"runtime": "rust"},
            'spec.runtime: Unsupported value: "rust": supported values: "docker", "micropython"',
        ),
        ({"containers": []}, "spec.containers: Required value: must have at least 1 item"),
        ({"containers": [{"name": "a"}]}, "spec.containers[0].image: Required value"),
        ({"extra": 1}, 'spec.extra: Forbidden: unknown field "extra"'),
        ({"priority": "high"}, 'spec.priority: Invalid value: "high": must be of type integer'),
        (
            {"restartPolicy": "Sometimes"},
            'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", '
            '"Never"',
        ),
        (
            {"resources": {"requests": {"memory": "lots"}}},
            "spec.resources.requests.memory: Invalid value: \"lots\": must be a quantity such as '64Ki', "
            "'512Mi', '500m' or '2'",
        ),
        (
            {"tolerations": [{"key": "k", "effect": "Sometimes"}]},
            'spec.tolerations[0].effect: Unsupported value: "Sometimes": supported values: "NoSchedule", '
            '"PreferNoSchedule", "NoExecute"',
        ),
        (
            {"volumes": [{"name": "v"}]},
            "spec.volumes[0]: Required value: must specify one of: hostPath, emptyDir, secret, configMap",
        ),
        (
            {
                "containers": [
                    {
                        "name": "a",
                        "image": "i",
                        "readinessProbe": {"exec": {"command": ["x"]}, "httpGet": {"port": 80}},
                    }
                ]
            },
            "spec.containers[0].readinessProbe: Forbidden: may not specify more than one of: exec, httpGet, "
            "tcpSocket",
        ),
    ],
)
def test_workload_errors_name_the_field(spec: dict[str, Any], expected: str) -> None:
    assert expected in messages("Workload", wl(**spec))


def test_micropython_rules() -> None:
    obj = wl(runtime="micropython")
    del obj["spec"]["containers"]
    assert messages("Workload", obj) == ["spec.app: Required value"]
    obj["spec"]["app"] = {"modules": [{"name": "main.py", "sha256": "ab"}]}
    msgs = messages("Workload", obj)
    assert any(m.startswith("spec.app.modules[0]") for m in msgs)
    obj["spec"]["app"] = {
        "modules": [
            {"name": "main.py", "sha256": "a" * 64, "size": 10},
            {"name": "lib.py", "configMapRef": {"name": "c", "key": "lib.py"}},
        ]
    }
    assert is_valid("Workload", obj) and messages("Workload", obj) == []


def test_both_validators_agree_on_valid_examples() -> None:
    deployment = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": wl()["spec"]},
            "strategy": {"waves": [1, "10%", "100%"], "maxUnavailable": 2, "failureThreshold": 0.3},
        },
    }
    assert is_valid("Deployment", deployment) and schema_causes("Deployment", deployment) == []
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["strategy"]["waves"] = ["ten"]
    assert not is_valid("Deployment", bad)
    assert schema_causes("Deployment", bad)[0]["field"] == "spec.strategy.waves[0]"


def test_label_keys_with_dots_are_bracketed_in_paths() -> None:
    assert (
        field_path(["metadata", "labels", "app.kubernetes.io/name"])
        == "metadata.labels[app.kubernetes.io/name]"
    )
    assert field_path(["spec", "containers", 0, "image"]) == "spec.containers[0].image"


def test_openapi_document_is_valid_openapi_3() -> None:
    from openapi_spec_validator import validate

    doc = json.loads(openapi_document())
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    for k in KINDS:
        assert k.kind in doc["components"]["schemas"]
        assert f"/api/v1/{k.plural}" in doc["paths"]


def test_parse_route() -> None:
    r = parse_route("namespaces/default/workloads/web/binding")
    assert (r.kind.kind, r.namespace, r.name, r.subresource) == ("Workload", "default", "web", "binding")
    r = parse_route("namespaces/team/status")
    assert (r.kind.kind, r.name, r.subresource) == ("Namespace", "team", "status")
    r = parse_route("namespaces/team")
    assert (r.kind.kind, r.namespace, r.name) == ("Namespace", None, "team")
    assert parse_route("workloads").namespace is None
    for bad in ("widgets", "devices/x/binding", "workloads/web", "namespaces/a/tokens", "", "a/b/c/d"):
        with pytest.raises(ApiError) as e:
            parse_route(bad)
        assert e.value.code == 404


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }
    assert merge_patch({"a": 1}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_admission_defaults_are_defensive() -> None:
    obj: dict[str, Any] = {"metadata": {"name": "x"}, "spec": "not-an-object"}
    causes, token = admission.admit_create(BY_KIND["Deployment"], obj)
    assert causes == [] and token is None and obj["spec"] == "not-an-object"
    tok: dict[str, Any] = {"metadata": {}, "spec": {"role": "viewer"}}
    _, plaintext = admission.admit_create(BY_KIND["Token"], tok)
    assert plaintext is not None and plaintext.startswith(f"flt_{tok['metadata']['name']}_")
    assert len(tok["spec"]["tokenHash"]) == 64


def test_tokens_round_trip() -> None:
    t = generate_token("abc")
    assert parse_token(t) == ("abc", t.split("_", 2)[2])
    assert parse_token("flt_only") is None and parse_token("nope_a_b") is None


def test_workload_references() -> None:
    spec = wl()["spec"]
    spec["containers"][0]["env"] = [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}
    ]
    spec["volumes"] = [{"name": "s", "secret": {"secretName": "sec"}}]
    spec["app"] = {
        "secrets": ["s2"],
        "modules": [{"name": "m.py", "configMapRef": {"name": "cm2", "key": "k"}}],
    }
    assert workload_references(spec) == ({"sec", "s2"}, {"cm", "cm2"})


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ValueError):
        parse_listen("host:http")
