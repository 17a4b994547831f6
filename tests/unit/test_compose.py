"""docker-compose -> Workload conversion (fleetlet.agent.compose)."""

from __future__ import annotations

import jsonschema
import pytest
from fleetlet.agent.compose import (
    ComposeError,
    compose_to_workload,
    convert_compose,
    is_compose,
    project_name,
)
from fleetlet.agent.spec import from_manifest
from fleetlet.schemas.api_schemas import kind_schema

FULL = """
version: "3.8"
name: shop
services:
  web:
    image: 127.0.0.1:5000/shop/web:1.2
    entrypoint: /bin/web
    command: ["--port", "8080"]
    environment:
      MODE: production
      DEBUG: false
    ports:
      - "8080:8080"
      - "127.0.0.1:9090:9090/udp"
    volumes:
      - /srv/shop:/data:ro
      - cache:/cache
    restart: unless-stopped
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 1m30s
      timeout: 5s
      retries: 5
      start_period: 10s
    mem_limit: 256m
    cpus: 0.5
    depends_on: [db]
  db:
    image: postgres:15
    command: postgres -c fsync=on
    environment:
      - POSTGRES_PASSWORD=secret
      - EMPTY=
    volumes:
      - cache:/var/lib/postgresql/data
    restart: always
    healthcheck:
      test: pg_isready
    deploy:
      resources:
        limits: {cpus: "2", memory: 1g}
volumes:
  cache: {}
x-anchors: {ignored: true}
"""


def test_full_conversion_matches_the_api_schema_and_the_agent_model() -> None:
    result = convert_compose(FULL, namespace="prod", source="shop/docker-compose.yml")
    wl = result.workload
    jsonschema.Draft202012Validator(kind_schema("Workload")).validate(wl)
    assert wl["metadata"]["name"] == "shop" and wl["metadata"]["namespace"] == "prod"
    spec = wl["spec"]
    assert spec["runtime"] == "docker" and spec["restartPolicy"] == "Always"
    web, db = spec["containers"]
    assert web["name"] == "web" and web["image"] == "127.0.0.1:5000/shop/web:1.2"
    assert web["command"] == ["/bin/web"] and web["args"] == ["--port", "8080"]
    assert web["env"] == [{"name": "MODE", "value": "production"}, {"name": "DEBUG", "value": "false"}]
    assert web["ports"] == [
        {"containerPort": 8080, "hostPort": 8080},
        {"containerPort": 9090, "hostPort": 9090, "protocol": "UDP"},
    ]
    assert web["resources"] == {"limits": {"memory": 256 * 1024**2, "cpu": "500m"}}
    probe = {
        "exec": {"command": ["wget", "-q", "-O-", "http://127.0.0.1:8080/health"]},
        "periodSeconds": 90,
        "timeoutSeconds": 5,
        "initialDelaySeconds": 10,
        "failureThreshold": 5,
    }
    assert web["livenessProbe"] == probe and web["readinessProbe"] == probe
    assert db["args"] == ["postgres", "-c", "fsync=on"] and "command" not in db
    assert db["env"] == [{"name": "POSTGRES_PASSWORD", "value": "secret"}, {"name": "EMPTY", "value": ""}]
    assert db["resources"] == {"limits": {"memory": 1024**3, "cpu": "2000m"}}
    assert db["livenessProbe"]["exec"]["command"] == ["sh", "-c", "pg_isready"]
    assert db["livenessProbe"]["periodSeconds"] == 30  # compose's default interval
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["cache"] == {"name": "cache", "emptyDir": {}}
    host = next(v for v in vols.values() if "hostPath" in v)
    assert host["hostPath"] == {"path": "/srv/shop"}
    assert {"name": host["name"], "mountPath": "/data", "readOnly": True} in web["volumeMounts"]
    # Both services share the one named volume.
    assert db["volumeMounts"] == [{"name": "cache", "mountPath": "/var/lib/postgresql/data"}]
    assert any("depends_on" in w for w in result.warnings)
    assert any("emptyDir" in w for w in result.warnings)

    # The agent can run what the conversion produces.
    model = from_manifest(wl)
    assert [c.name for c in model.containers] == ["web", "db"]
    assert model.containers[0].memory == 256 * 1024**2 and model.containers[0].cpu_millis == 500
    assert model.containers[0].liveness is not None and model.containers[0].liveness.period == 90


def test_unsupported_keys_are_listed_per_service_in_one_error() -> None:
    text = """
services:
  web:
    build: .
    image: web
    networks: [front]
    privileged: true
    deploy: {replicas: 3}
  worker:
    image: worker
    links: [web]
networks:
  front: {}
"""
    with pytest.raises(ComposeError) as err:
        compose_to_workload(text, "app", source="docker-compose.yml")
    msg = str(err.value)
    assert (
        'docker-compose.yml: service "web": unsupported keys: build, deploy.replicas, networks, privileged'
        in msg
    )
    assert 'docker-compose.yml: service "worker": unsupported keys: links' in msg
    assert "docker-compose.yml: unsupported top-level keys: networks" in msg


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        ({"image": "x", "volumes": ["./data:/data"]}, "relative host paths"),
        ({"image": "x", "ports": ["8000-8010:8000-8010"]}, "port ranges"),
        ({"image": "x", "network_mode": "bridge"}, "network_mode 'bridge'"),
        ({"image": "x", "restart": "sometimes"}, "restart 'sometimes'"),
        ({"image": "x", "mem_limit": "lots"}, "memory limit"),
        ({"command": "true"}, "'image' is required"),
        ({"image": "x", "healthcheck": {"test": "true", "interval": "soon"}}, "duration"),
    ],
)
def test_bad_values_name_the_service(service: dict[str, object], problem: str) -> None:
    with pytest.raises(ComposeError, match=problem) as err:
        convert_compose({"services": {"svc": service}}, name="app")
    assert 'service "svc"' in str(err.value)


def test_restart_mapping_and_policy_conflicts() -> None:
    for compose_value, policy in (
        ("no", "Never"),
        ("on-failure:3", "OnFailure"),
        ("unless-stopped", "Always"),
    ):
        wl = convert_compose({"services": {"a": {"image": "x", "restart": compose_value}}}, name="n").workload
        assert wl["spec"]["restartPolicy"] == policy
    with pytest.raises(ComposeError, match="one restart policy"):
        convert_compose(
            {"services": {"a": {"image": "x", "restart": "no"}, "b": {"image": "y", "restart": "always"}}},
            name="n",
        )


def test_network_mode_none_and_names() -> None:
    wl = convert_compose(
        {"services": {"My_Svc": {"image": "x", "network_mode": "none"}}}, name="Demo_App"
    ).workload
    assert wl["metadata"]["name"] == "demo-app"
    assert wl["spec"]["containers"][0]["name"] == "my-svc"
    assert wl["metadata"]["annotations"]["fleetlet.io/network-mode"] == "none"
    assert from_manifest(wl).network_mode == "none"


def test_detection_and_project_name() -> None:
    assert is_compose({"services": {}})
    assert not is_compose({"kind": "Workload", "services": {}})
    assert project_name("/home/me/My_Shop/docker-compose.yml") == "my-shop"
    with pytest.raises(ComposeError, match="not a compose file"):
        convert_compose("kind: Workload\n", name="x")
    with pytest.raises(ComposeError, match="malformed YAML"):
        convert_compose("services: [", name="x")


def test_namespace_is_left_to_the_cli_unless_given() -> None:
    doc = {"services": {"a": {"image": "x"}}}
    assert "namespace" not in compose_to_workload(doc, "app")["metadata"]
    assert compose_to_workload(doc, "app", namespace="edge")["metadata"]["namespace"] == "edge"


def test_variables_are_interpolated_from_the_applying_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAG", "1.4")
    monkeypatch.setenv("EMPTY_VAR", "")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    text = """
services:
  web:
    image: "registry.local:5000/web:${TAG}"
    command: ["sh", "-c", "echo $$HOME $TAG ${UNSET_VAR:-dflt} ${EMPTY_VAR-kept} ${EMPTY_VAR:-swapped}"]
    environment:
      MODE: "${UNSET_VAR-fallback}"
"""
    (web,) = convert_compose(text, name="app").workload["spec"]["containers"]
    assert web["image"] == "registry.local:5000/web:1.4"
    assert web["args"] == ["sh", "-c", "echo $HOME 1.4 dflt  swapped"]
    assert web["env"] == [{"name": "MODE", "value": "fallback"}]
    with pytest.raises(ComposeError, match="required variable UNSET_VAR is not set: set it first"):
        convert_compose(
            {"services": {"a": {"image": "x:${UNSET_VAR:?set it first}"}}}, name="app", source="c.yml"
        )
    with pytest.raises(ComposeError, match="invalid interpolation"):
        convert_compose({"services": {"a": {"image": "x", "command": "echo $1"}}}, name="app")
