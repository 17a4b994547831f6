"""The gateway's wire codec (fleetlet.gateway.wire) against the shared vectors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fleetlet.gateway.wire import (
    MAX_PAYLOAD,
    MESSAGES,
    BlobRef,
    Container,
    ContainerStatus,
    DesiredDoc,
    DockerWorkload,
    Hello,
    HttpGet,
    MicroPythonWorkload,
    MirrorOffer,
    Mount,
    NetworkMode,
    Port,
    Probe,
    Registered,
    Report,
    Resources,
    RestartPolicy,
    Runtime,
    Volume,
    WireError,
    WorkloadState,
    WorkloadStatus,
    decode_value,
    encode_value,
)
from fleetlet.schemas.wire_loader import MESSAGE_RULES, all_vector_files, load_vectors, untag, validate_cddl

MESSAGE_CLASSES: dict[str, Any] = {t: MESSAGES[rule] for t, rule in MESSAGE_RULES.items()}

VECTORS = [(f["type"], v) for f in all_vector_files() for v in f["vectors"]]
INVALID = [(f["type"], v) for f in all_vector_files() for v in f["invalid"]]


def _id(x: Any) -> str:
    return x if isinstance(x, str) else str(x["name"])


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that tells 1 from 1.0 and True, and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def test_every_message_type_has_a_minimal_and_a_fuller_vector() -> None:
    for message_type in MESSAGE_CLASSES:
        vectors = load_vectors(message_type)["vectors"]
        assert len(vectors) >= 2, message_type
        sizes = sorted(len(v["hex"]) for v in vectors)
        assert sizes[0] < sizes[-1], message_type


@pytest.mark.parametrize(("message_type", "vector"), VECTORS, ids=_id)
def test_vector_decodes_to_its_json_value(message_type: str, vector: Any) -> None:
    decoded = decode_value(bytes.fromhex(vector["hex"]))
    assert strict_equal(decoded, untag(vector["decoded"]))


@pytest.mark.parametrize(("message_type", "vector"), VECTORS, ids=_id)
def test_json_value_encodes_to_the_vector_bytes(message_type: str, vector: Any) -> None:
    assert encode_value(untag(vector["decoded"])).hex() == vector["hex"]


@pytest.mark.parametrize(("message_type", "vector"), VECTORS, ids=_id)
def test_typed_message_round_trips_byte_exact(message_type: str, vector: Any) -> None:
    cls = MESSAGE_CLASSES[message_type]
    message = cls.from_cbor(bytes.fromhex(vector["hex"]))
    assert isinstance(message, cls)
    assert message.to_cbor().hex() == vector["hex"]


@pytest.mark.parametrize(("message_type", "vector"), INVALID, ids=_id)
def test_invalid_vector_is_rejected_naming_the_field(message_type: str, vector: Any) -> None:
    with pytest.raises(WireError) as info:
        MESSAGE_CLASSES[message_type].from_cbor(bytes.fromhex(vector["hex"]))
    assert str(info.value).startswith(vector["error"]), str(info.value)


def test_report_built_from_dataclasses_matches_the_full_vector() -> None:
    vector = next(v for v in load_vectors("report")["vectors"] if v["name"] == "full")
    report = Report(
        gen=7,
        workloads=(
            WorkloadStatus("6f1c3c4e-2f7b-4d0a-9a41-0c5d2b7e8f10", 3, WorkloadState.RUNNING, ready=True),
            WorkloadStatus(
                "b2d4e6f8-1a3c-4e5f-8a7b-9c0d1e2f3a4b",
                12,
                WorkloadState.BACKOFF,
                restarts=5,
                exit_code=-1,
                message="ImportError: no module named 'sensor'",
                rolled_back=True,
                ready=False,
            ),
        ),
        heap_free=48123,
        uptime=3600,
        metrics={"temp_c": 21.5, "rssi": -67, "vbat": 100000.0, "load": 0.1},
        error="blob 9f86d0 sha256 mismatch",
    )
    assert report.to_cbor().hex() == vector["hex"]


def test_report_with_container_statuses_matches_the_agent_vector() -> None:
    # What the SBC agent sends (status.py builds these dataclasses): the shared vector pins it.
    vector = next(v for v in load_vectors("report")["vectors"] if v["name"] == "containers")
    assert vector.get("sender") == "agent"
    report = Report(
        gen=12,
        workloads=(
            WorkloadStatus(
                "b2d4e6f8-1a3c-4e5f-8a7b-9c0d1e2f3a4b",
                12,
                WorkloadState.BACKOFF,
                restarts=3,
                exit_code=137,
                ready=False,
                containers=(
                    ContainerStatus("web", WorkloadState.RUNNING, ready=True, cpu=250, memory=52428800),
                    ContainerStatus(
                        "sidecar",
                        WorkloadState.BACKOFF,
                        restarts=3,
                        exit_code=137,
                        ready=False,
                        cpu=0,
                        memory=4096,
                    ),
                ),
            ),
        ),
        heap_free=734003200,
        uptime=86400,
    )
    assert report.to_cbor().hex() == vector["hex"]
    assert Report.from_cbor(bytes.fromhex(vector["hex"])) == report


def test_registered_carries_the_gateway_registry_mirror() -> None:
    vector = next(v for v in load_vectors("registered")["vectors"] if v["name"] == "with-mirror")
    reg = Registered.from_cbor(bytes.fromhex(vector["hex"]))
    offer = MirrorOffer("127.0.0.1:5001", "registry.local:5000")
    assert reg == Registered(3600, "/rd/pi-7", 1764165600, offer)
    assert reg.to_cbor().hex() == vector["hex"]
    # Absent: no mirror offered (the older vectors).
    minimal = load_vectors("registered")["vectors"][0]
    assert Registered.from_cbor(bytes.fromhex(minimal["hex"])).registry_mirror is None


def test_registry_mirror_fields_are_typed_and_required() -> None:
    base = {0: 1, 1: 60, 2: "/rd/x"}
    with pytest.raises(WireError, match=r"^registered\.mirror\.upstream: missing"):
        Registered.from_cbor(encode_value({**base, 4: {1: "127.0.0.1:5001"}}))
    with pytest.raises(WireError, match=r"^registered\.mirror\.address: expected tstr, got uint"):
        Registered.from_cbor(encode_value({**base, 4: {1: 5001, 2: "docker.io"}}))
    with pytest.raises(WireError, match=r"^registered\.mirror: expected map, got tstr"):
        Registered.from_cbor(encode_value({**base, 4: "127.0.0.1:5001"}))


def test_docker_vector_decodes_into_typed_fields() -> None:
    vector = next(v for v in load_vectors("desired")["vectors"] if v["name"] == "docker")
    doc = DesiredDoc.from_cbor(bytes.fromhex(vector["hex"]))
    (workload,) = doc.workloads
    assert isinstance(workload, DockerWorkload)
    web, sidecar = workload.containers
    assert web.ports == (Port(8080, 80), Port(5353, protocol="udp"))
    assert web.resources == Resources(memory=134217728, cpu=500)
    assert web.liveness == Probe(http_get=HttpGet("/healthz", 8080), initial_delay=5, period=10, timeout=2,
                                 failure_threshold=3)  # fmt: skip
    assert web.readiness == Probe(tcp_port=8080, success_threshold=1)
    assert sidecar.liveness == Probe(exec=("cat", "/tmp/ok"))
    assert workload.restart_policy is RestartPolicy.ALWAYS


def test_micropython_vector_decodes_into_typed_fields() -> None:
    vector = next(v for v in load_vectors("desired")["vectors"] if v["name"] == "micropython")
    (workload,) = DesiredDoc.from_cbor(bytes.fromhex(vector["hex"])).workloads
    assert isinstance(workload, MicroPythonWorkload)
    assert workload.runtime is Runtime.MICROPYTHON
    assert workload.restart_policy is RestartPolicy.ON_FAILURE
    assert [m.name for m in workload.modules] == ["main.py", "lib/util.mpy"]
    assert workload.config["offset"] == -2 and workload.config["key"] == b"\x01\x02"
    assert workload.secrets == {"wifi_psk": b"hunter2"}


def test_to_cbor_refuses_to_send_an_invalid_message() -> None:
    doc = DesiredDoc(
        gen=1,
        workloads=(MicroPythonWorkload("u", "n", 1, "main", modules=(BlobRef(b"\x00" * 31, 1, "a.py"),)),),
    )
    with pytest.raises(WireError, match=r"^desired\.workloads\[0\]\.modules\[0\]\.sha256: expected 32 bytes"):
        doc.to_cbor()


def test_port_out_of_range_is_rejected() -> None:
    container = Container("c", "i", ports=(Port(70000),))
    doc = DesiredDoc(gen=1, workloads=(DockerWorkload("u", "n", 1, (container,)),))
    with pytest.raises(WireError, match=r"ports\[0\]\.container: port 70000 is out of range"):
        doc.to_cbor()


def test_probe_needs_exactly_one_handler() -> None:
    bad = {1: ["true"], 3: 80}
    with pytest.raises(WireError, match="exactly one of exec, http-get, tcp-port; found exec, tcp-port"):
        Probe.from_obj(bad, "probe")
    with pytest.raises(WireError, match="found none"):
        Probe.from_obj({5: 1}, "probe")


def test_runtime_specific_keys_are_not_mixed() -> None:
    obj = {0: 1, 1: 1, 2: [{1: "u", 2: "n", 3: 1, 4: "docker", 6: "main", 10: [{1: "c", 2: "i"}]}]}
    with pytest.raises(WireError, match=r"^desired\.workloads\[0\]\.entry: not allowed for runtime 'docker'"):
        DesiredDoc.from_cbor(encode_value(obj))


def test_unknown_runtime_is_named() -> None:
    obj = {0: 1, 1: 1, 2: [{1: "u", 2: "n", 3: 1, 4: "wasm"}]}
    with pytest.raises(WireError, match=r"^desired\.workloads\[0\]\.runtime: unknown runtime 'wasm'"):
        DesiredDoc.from_cbor(encode_value(obj))


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    report = Report.from_cbor(encode_value({0: 1, 1: 4, 23: "from v1.1", 2: [{1: "u", 2: 1, 3: 3, 99: 0}]}))
    assert report.gen == 4 and report.workloads[0].state is WorkloadState.RUNNING


def test_bool_is_not_an_uint() -> None:
    with pytest.raises(WireError, match=r"^report\.gen: expected uint, got bool"):
        Report.from_cbor(encode_value({0: 1, 1: True}))


def test_top_level_must_be_a_map() -> None:
    with pytest.raises(WireError, match=r"^hello: expected map, got array"):
        Hello.from_cbor(encode_value([1, 2]))


@pytest.mark.parametrize(
    ("hex_data", "problem"),
    [
        ("", "empty payload"),
        ("a2000101", "malformed CBOR"),  # truncated
        ("a200010100ff", "1 trailing bytes"),
        ("a300010100 0101".replace(" ", ""), "Duplicate map key"),
        ("a2000101c11bffffffffffffffff", "malformed CBOR"),  # epoch date out of range
    ],
)
def test_malformed_payloads_raise_wire_error(hex_data: str, problem: str) -> None:
    with pytest.raises(WireError, match=problem) as info:
        Report.from_cbor(bytes.fromhex(hex_data))
    assert info.value.path == "report"


def test_payload_size_guard_on_decode_and_encode() -> None:
    big = encode_value({0: 1, 1: 1, 6: "x" * MAX_PAYLOAD}, max_size=None)
    with pytest.raises(WireError, match=f"exceeds the limit of {MAX_PAYLOAD}"):
        Report.from_cbor(big)
    assert Report.from_cbor(big, max_size=None).error == "x" * MAX_PAYLOAD
    with pytest.raises(WireError, match="exceeds the limit of 100"):
        Report(gen=1, error="y" * 100).to_cbor(max_size=100)


def test_nesting_depth_is_limited() -> None:
    deep = bytes.fromhex("81") * 100 + b"\x00"
    with pytest.raises(WireError, match="depth"):
        decode_value(deep)


def test_map_keys_sort_bytewise_not_length_first() -> None:
    # RFC 8949 4.2.1 order: 5, 100 (0x1864), 1000 (0x1903e8), -1 (0x20), "a" (0x6161).
    # RFC 7049 length-first order (cbor2's canonical mode) would put -1 first.
    assert encode_value({"a": 0, -1: 0, 1000: 0, 100: 0, 5: 0}).hex() == "a5050018640019" + "03e8002000616100"


# ---------------------------------------------------------------- docker volumes, network, usage


def test_docker_volumes_vector_decodes_into_typed_fields() -> None:
    vector = next(v for v in load_vectors("desired")["vectors"] if v["name"] == "docker-volumes")
    (workload,) = DesiredDoc.from_cbor(bytes.fromhex(vector["hex"])).workloads
    assert isinstance(workload, DockerWorkload)
    assert workload.network is NetworkMode.NONE
    assert {v.name: v.kind for v in workload.volumes} == {
        "d": "emptyDir",
        "h": "hostPath",
        "s": "secret",
        "c": "configMap",
    }
    assert workload.volumes[1].host_path == "/etc/h"
    assert workload.volumes[2].secret == {"pw": b"\x00"}
    assert workload.volumes[3].config_map == {"a.conf": b"x"}
    (api,) = workload.containers
    assert api.mounts == (
        Mount("d", "/d"),
        Mount("h", "/etc/h", read_only=True),
        Mount("s", "/s"),
        Mount("c", "/c"),
    )
    assert api.working_dir == "/srv"


def test_docker_workload_built_from_dataclasses_matches_the_volumes_vector() -> None:
    vector = next(v for v in load_vectors("desired")["vectors"] if v["name"] == "docker-volumes")
    mounts = (Mount("d", "/d"), Mount("h", "/etc/h", True), Mount("s", "/s"), Mount("c", "/c"))
    doc = DesiredDoc(
        gen=9,
        workloads=(
            DockerWorkload(
                "u",
                "edge/shop",
                4,
                (Container("api", "busybox", mounts=mounts, working_dir="/srv"),),
                volumes=(
                    Volume("d"),
                    Volume("h", host_path="/etc/h"),
                    Volume("s", secret={"pw": b"\x00"}),
                    Volume("c", config_map={"a.conf": b"x"}),
                ),
                network=NetworkMode.NONE,
            ),
        ),
    )
    assert doc.to_cbor().hex() == vector["hex"]


def test_defaults_keep_the_old_encoding() -> None:
    # Host network, no volumes, no mounts, no working dir: nothing new on the wire, so every
    # document a v1 gateway built before these keys encodes to the same bytes.
    wl = DockerWorkload("u", "n", 1, (Container("c", "i"),))
    assert wl.to_obj() == {1: "u", 2: "n", 3: 1, 4: "docker", 10: [{1: "c", 2: "i"}]}


def test_an_empty_secret_stays_a_secret_volume() -> None:
    # An empty map is not omitted: it is what tells a secret (read-only, 0700) from an emptyDir.
    doc = DesiredDoc(
        gen=1,
        workloads=(DockerWorkload("u", "n", 1, (Container("c", "i"),), volumes=(Volume("e", secret={}),)),),
    )
    data = doc.to_cbor()
    assert validate_cddl(data, "desired") == []
    (wl,) = DesiredDoc.from_cbor(data).workloads
    assert isinstance(wl, DockerWorkload) and wl.volumes[0].kind == "secret" and wl.volumes[0].secret == {}


def test_volume_repr_names_files_never_their_contents() -> None:
    text = repr(Volume("creds", secret={"password": b"hunter2"}))
    assert "password" in text and "hunter2" not in text
    wl = DockerWorkload(
        "u", "n", 1, (Container("c", "i"),), volumes=(Volume("creds", secret={"k": b"hunter2"}),)
    )
    assert "hunter2" not in repr(wl)


@pytest.mark.parametrize(
    ("volume", "mounts", "error"),
    [
        (
            {1: "v", 2: "/h", 3: {}},
            [],
            r"^desired\.workloads\[0\]\.volumes\[0\]: expected at most one of host-path, secret, config-map; "
            "found host-path, secret",
        ),
        (
            {1: "v"},
            [{1: "w", 2: "/w"}],
            r"^desired\.workloads\[0\]\.containers\[0\]\.mounts\[0\]\.volume: no volume named 'w'",
        ),
        (
            {1: "v", 3: {"k": "text"}},
            [],
            r"^desired\.workloads\[0\]\.volumes\[0\]\.secret\['k'\]: expected bstr, got tstr",
        ),
    ],
)
def test_bad_volumes_and_mounts_are_refused_naming_the_field(volume: Any, mounts: Any, error: str) -> None:
    container: dict[int, Any] = {1: "c", 2: "i"}
    if mounts:
        container[10] = mounts
    obj = {0: 1, 1: 1, 2: [{1: "u", 2: "n", 3: 1, 4: "docker", 10: [container], 11: [volume]}]}
    with pytest.raises(WireError, match=error):
        DesiredDoc.from_cbor(encode_value(obj))


def test_duplicate_volume_names_are_refused() -> None:
    obj = {
        0: 1,
        1: 1,
        2: [{1: "u", 2: "n", 3: 1, 4: "docker", 10: [{1: "c", 2: "i"}], 11: [{1: "v"}, {1: "v", 2: "/h"}]}],
    }
    with pytest.raises(WireError, match=r"volumes\[1\]\.name: duplicate volume name 'v'"):
        DesiredDoc.from_cbor(encode_value(obj))


def test_network_mode_is_host_or_none_only() -> None:
    obj = {0: 1, 1: 1, 2: [{1: "u", 2: "n", 3: 1, 4: "docker", 10: [{1: "c", 2: "i"}], 12: 2}]}
    data = encode_value(obj)
    assert validate_cddl(data, "desired") != []
    with pytest.raises(
        WireError,
        match=r"^desired\.workloads\[0\]\.network: unknown value 2 \(expected one of 0=host, 1=none\)",
    ):
        DesiredDoc.from_cbor(data)


def test_container_statuses_round_trip_with_usage() -> None:
    report = Report(
        gen=3,
        workloads=(
            WorkloadStatus(
                "u",
                2,
                WorkloadState.RUNNING,
                restarts=1,
                containers=(
                    ContainerStatus(
                        "api",
                        WorkloadState.RUNNING,
                        restarts=1,
                        exit_code=137,
                        ready=True,
                        cpu=125,
                        memory=35651584,
                    ),
                    # An idle container uses 0 m: that is kept, unlike an unsampled one (None).
                    ContainerStatus("idle", WorkloadState.RUNNING, cpu=0, memory=0),
                    ContainerStatus("new", WorkloadState.STARTING),
                ),
            ),
        ),
    )
    data = report.to_cbor()
    assert validate_cddl(data, "report") == []
    back = Report.from_cbor(data)
    assert back == report
    assert back.to_cbor() == data
    api, idle, new = back.workloads[0].containers
    assert (api.cpu, api.memory, idle.cpu, idle.memory) == (125, 35651584, 0, 0)
    assert (new.cpu, new.memory) == (None, None)
    # Not in a shared vector: the firmware's report builder has no container statuses (it never
    # runs docker), and every report vector is rebuilt byte for byte with it.
    assert decode_value(data)[2][0][9][2] == {1: "new", 2: 2}
