"""gateway/translate.py for docker workloads: volumes, secret files, working dir and network mode
reach the wire, and what the wire cannot carry is refused by name, never dropped.

The strongest check: a compose file (or a manifest with a secret volume) gives the agent the same
spec, spec hash included, whether it goes through the gateway and the wire or is run locally.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fleetlet.agent.compose import compose_to_workload
from fleetlet.agent.spec import from_manifest, from_wire
from fleetlet.gateway.translate import TranslateError, translate_workload
from fleetlet.gateway.wire import (
    MAX_PAYLOAD,
    DesiredDoc,
    DockerWorkload,
    Mount,
    NetworkMode,
    Volume,
    encode_value,
)
from fleetlet.schemas.wire_loader import validate_cddl

SECRET = b"hunter2-\x00-binary"


class Refs:
    def __init__(self) -> None:
        self.secrets: dict[str, Any] = {
            "default/creds": {
                "data": {"password": base64.b64encode(SECRET).decode()},
                "stringData": {"user": "admin"},
            },
        }
        self.configmaps: dict[str, Any] = {
            "default/settings": {
                "data": {"app.conf": "level=info\n"},
                "binaryData": {"logo.bin": base64.b64encode(b"\x89PNG").decode()},
            }
        }

    async def secret(self, namespace: str, name: str) -> Any:
        return self.secrets.get(f"{namespace}/{name}")

    async def configmap(self, namespace: str, name: str) -> Any:
        return self.configmaps.get(f"{namespace}/{name}")


def _wl(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "app", "namespace": "default", "uid": "u-1", "generation": 2}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"runtime": "docker", **spec}}


async def _decoded(workload: dict[str, Any], refs: Refs | None = None) -> DockerWorkload:
    t = await translate_workload(workload, refs or Refs())
    data = encode_value({0: 1, 1: 1, 2: [t.entry]})
    assert validate_cddl(data, "desired") == []
    (wl,) = DesiredDoc.from_cbor(data).workloads
    assert isinstance(wl, DockerWorkload)
    return wl


COMPOSE = """
name: shop
services:
  api:
    image: busybox
    working_dir: /srv
    network_mode: none
    volumes:
      - cache:/var/cache/shop
      - /etc/shop:/etc/shop:ro
  worker:
    image: busybox
    network_mode: none
    volumes:
      - cache:/cache
volumes:
  cache: {}
"""


async def test_compose_volumes_working_dir_and_no_network_reach_the_agent_as_run_locally() -> None:
    manifest = compose_to_workload(COMPOSE)
    manifest["metadata"].update(namespace="default", uid="u-1", generation=2)
    wl = await _decoded(manifest)
    assert wl.network is NetworkMode.NONE
    assert {v.name: v.kind for v in wl.volumes} == {"cache": "emptyDir", "host--etc-shop": "hostPath"}
    api, worker = wl.containers
    assert api.working_dir == "/srv" and worker.working_dir is None
    assert api.mounts == (
        Mount("cache", "/var/cache/shop"),
        Mount("host--etc-shop", "/etc/shop", read_only=True),
    )
    assert worker.mounts == (Mount("cache", "/cache"),)
    # The agent's spec from the wire is the one it builds from the manifest itself.
    via_gateway, local = from_wire(wl), from_manifest(manifest)
    assert via_gateway == local
    assert via_gateway.spec_hash() == local.spec_hash()
    assert via_gateway.network_mode == "none"


async def test_secret_and_configmap_volumes_carry_their_files_like_secret_env() -> None:
    spec = {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
                "volumeMounts": [
                    {"name": "creds", "mountPath": "/run/secrets/creds"},
                    {"name": "settings", "mountPath": "/etc/settings", "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "creds", "secret": {"secretName": "creds"}},
            {"name": "settings", "configMap": {"name": "settings"}},
        ],
    }
    t = await translate_workload(_wl(spec), Refs())
    assert t.refs == {"secret:default/creds", "configmap:default/settings"}
    wl = await _decoded(_wl(spec))
    creds, settings = wl.volumes
    assert creds.secret == {"password": SECRET, "user": b"admin"} and creds.config_map is None
    assert settings.config_map == {"app.conf": b"level=info\n", "logo.bin": b"\x89PNG"}
    assert wl.containers[0].env == {"PW": SECRET.decode(errors="replace")}
    manifest_secrets = {"creds": {"password": SECRET, "user": b"admin"}}
    manifest_cms = {"settings": {"app.conf": "level=info\n"}}
    agent = from_wire(wl)
    assert [(v.name, v.kind, dict(v.files)) for v in agent.volumes] == [
        ("creds", "secret", {"password": SECRET, "user": b"admin"}),
        ("settings", "configMap", {"app.conf": b"level=info\n", "logo.bin": b"\x89PNG"}),
    ]
    # Without binaryData the local and the delivered specs agree to the hash.
    plain_refs = Refs()
    del plain_refs.configmaps["default/settings"]["binaryData"]
    wl2 = await _decoded(_wl(spec), plain_refs)
    assert (
        from_wire(wl2).spec_hash()
        == from_manifest(_wl(spec), secrets=manifest_secrets, config_maps=manifest_cms).spec_hash()
    )
    assert SECRET.decode(errors="replace") not in repr(agent)


async def test_a_missing_secret_volume_is_refused_not_skipped() -> None:
    spec = {
        "containers": [{"name": "main", "image": "busybox"}],
        "volumes": [{"name": "creds", "secret": {"secretName": "absent"}}],
    }
    with pytest.raises(TranslateError) as info:
        await translate_workload(_wl(spec), Refs())
    assert info.value.reason == "SecretNotFound"
    assert 'secret "default/absent" not found' in info.value.message


@pytest.mark.parametrize("mode", ["bridge", "container:db", "default"])
async def test_network_modes_other_than_host_and_none_are_refused(mode: str) -> None:
    wl = _wl({"containers": [{"name": "main", "image": "busybox"}]}, {"fleetlet.io/network-mode": mode})
    with pytest.raises(TranslateError) as info:
        await translate_workload(wl, Refs())
    assert info.value.reason == "InvalidSpec"
    assert "metadata.annotations[fleetlet.io/network-mode]" in info.value.message
    assert f"{mode!r} is not supported" in info.value.message and "never a bridge" in info.value.message


async def test_host_network_is_the_default_and_explicit_host_encodes_the_same() -> None:
    spec = {"containers": [{"name": "main", "image": "busybox"}]}
    implicit = await translate_workload(_wl(spec), Refs())
    explicit = await translate_workload(_wl(spec, {"fleetlet.io/network-mode": "host"}), Refs())
    assert implicit.entry == explicit.entry and 12 not in implicit.entry


@pytest.mark.parametrize(
    ("container", "volumes", "spec_extra", "reason", "message"),
    [
        (
            {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
            [],
            {},
            "InvalidSpec",
            "spec.containers[0].volumeMounts[0]: no volume named 'nope' in spec.volumes",
        ),
        (
            {"volumeMounts": [{"name": "d", "mountPath": "rel/x"}]},
            [{"name": "d", "emptyDir": {}}],
            {},
            "InvalidSpec",
            "spec.containers[0].volumeMounts[0].mountPath: 'rel/x' is not an absolute path",
        ),
        (
            {},
            [{"name": "d", "emptyDir": {"sizeLimit": "1Gi"}}],
            {},
            "Unsupported",
            "spec.volumes[0].emptyDir.sizeLimit: not supported on devices",
        ),
        (
            {},
            [{"name": "h", "hostPath": {"path": "data"}}],
            {},
            "InvalidSpec",
            "spec.volumes[0].hostPath.path: 'data' is not an absolute path",
        ),
        (
            {},
            [{"name": "d", "emptyDir": {}}, {"name": "d", "hostPath": {"path": "/d"}}],
            {},
            "InvalidSpec",
            "spec.volumes[1]: duplicate volume name 'd'",
        ),
        (
            {"imagePullPolicy": "Always"},
            [],
            {},
            "Unsupported",
            "spec.containers[0].imagePullPolicy: 'Always' is not supported on devices",
        ),
        (
            {"livenessProbe": {"httpGet": {"port": 80, "scheme": "HTTPS"}}},
            [],
            {},
            "Unsupported",
            "httpGet.scheme 'HTTPS' is not supported (HTTP only)",
        ),
        (
            {},
            [],
            {"terminationGracePeriodSeconds": 60},
            "Unsupported",
            "spec.terminationGracePeriodSeconds is not supported on devices",
        ),
    ],
)
async def test_what_cannot_be_carried_is_refused_by_name(
    container: dict[str, Any], volumes: list[Any], spec_extra: dict[str, Any], reason: str, message: str
) -> None:
    spec = {"containers": [{"name": "main", "image": "busybox", **container}], **spec_extra}
    if volumes:
        spec["volumes"] = volumes
    with pytest.raises(TranslateError) as info:
        await translate_workload(_wl(spec), Refs())
    assert info.value.reason == reason
    assert message in info.value.message, info.value.message


async def test_if_not_present_is_what_the_agent_does_and_is_accepted() -> None:
    spec = {"containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent"}]}
    wl = await _decoded(_wl(spec))
    assert wl.containers[0].image == "busybox"


async def test_secret_files_too_big_for_the_wire_are_refused_without_their_contents() -> None:
    refs = Refs()
    big = b"S" * 40 + b"".join(bytes([i % 251]) for i in range(MAX_PAYLOAD))
    refs.secrets["default/big"] = {"data": {"blob": base64.b64encode(big).decode()}}
    spec = {
        "containers": [
            {"name": "main", "image": "busybox", "volumeMounts": [{"name": "b", "mountPath": "/b"}]}
        ],
        "volumes": [{"name": "b", "secret": {"secretName": "big"}}],
    }
    with pytest.raises(TranslateError) as info:
        await translate_workload(_wl(spec), refs)
    assert info.value.reason == "TooLarge"
    assert f"over the wire's limit of {MAX_PAYLOAD}" in info.value.message
    assert "SSSS" not in info.value.message and "SSSS" not in str(info.value)


def test_volume_dataclass_reprs_hide_secret_values() -> None:
    assert "hunter2" not in repr(Volume("v", secret={"k": b"hunter2"}))
