"""Property tests: the decoder only ever raises WireError, and typed messages round-trip."""

from __future__ import annotations

from typing import Any

from fleetlet.gateway.wire import (
    MESSAGES,
    BlobRef,
    Container,
    DesiredDoc,
    DockerWorkload,
    Hello,
    HttpGet,
    LogBatch,
    LogClock,
    LogLine,
    LogStream,
    MicroPythonWorkload,
    Port,
    Probe,
    Report,
    Resources,
    RestartPolicy,
    Runtime,
    WireError,
    WorkloadState,
    WorkloadStatus,
    decode_value,
    encode_value,
)
from fleetlet.schemas.wire_loader import all_vector_files, validate_cddl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# No deadline: these tests assert behaviour, never speed.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [bytes.fromhex(v["hex"]) for f in all_vector_files() for v in f["vectors"]]


def _decode_all(data: bytes) -> None:
    for cls in MESSAGES.values():
        try:
            cls.from_cbor(data)
        except WireError:
            pass  # the only exception a malformed payload may raise


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    _decode_all(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_vectors_raise_only_wire_error(seed: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos:]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=9))
    _decode_all(bytes(buf))


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(0, 30) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@FUZZ
@given(cbor_values)
def test_generic_values_round_trip_and_never_crash_the_messages(value: Any) -> None:
    data = encode_value(value, max_size=None)
    assert decode_value(data, max_size=None) == value
    assert encode_value(decode_value(data, max_size=None), max_size=None) == data
    _decode_all(data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=33)
)
int_maps = st.dictionaries(st.integers(0, 10), scalars | st.lists(scalars, max_size=3), max_size=6)


@FUZZ
@given(st.dictionaries(st.integers(1, 10), scalars | int_maps | st.lists(int_maps | scalars, max_size=3)))
def test_message_shaped_maps_raise_only_wire_error(value: dict[int, Any]) -> None:
    value[0] = 1  # right version, so validation goes past the header into the fields
    _decode_all(encode_value(value, max_size=None))


# ---------------------------------------------------------------- typed round trips

uint = st.integers(0, 2**64 - 1)
small = st.integers(0, 2**32)
text = st.text(max_size=16)
port = st.integers(0, 65535)

blob_refs = st.builds(BlobRef, sha256=st.binary(min_size=32, max_size=32), size=small, name=text)
probes = st.one_of(
    st.builds(Probe, exec=st.lists(text, min_size=1, max_size=3).map(tuple)),
    st.builds(Probe, http_get=st.builds(HttpGet, path=text, port=port), period=small),
    st.builds(Probe, tcp_port=port, failure_threshold=small),
)
containers = st.builds(
    Container,
    name=text,
    image=text,
    command=st.lists(text, max_size=3).map(tuple),
    env=st.dictionaries(text, text, max_size=3),
    ports=st.lists(
        st.builds(Port, container=port, host=st.none() | port, protocol=st.sampled_from(["tcp", "udp"])),
        max_size=2,
    ).map(tuple),
    resources=st.none() | st.builds(Resources, memory=st.none() | small, cpu=st.none() | small),
    liveness=st.none() | probes,
)
workloads = st.one_of(
    st.builds(
        MicroPythonWorkload,
        uid=text,
        name=text,
        generation=uint,
        entry=text,
        modules=st.lists(blob_refs, max_size=3).map(tuple),
        config=st.dictionaries(
            text, st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | text, max_size=3
        ),
        secrets=st.dictionaries(text, st.binary(max_size=8), max_size=2),
        restart_policy=st.sampled_from(RestartPolicy),
    ),
    st.builds(
        DockerWorkload,
        uid=text,
        name=text,
        generation=uint,
        containers=st.lists(containers, min_size=1, max_size=2).map(tuple),
        restart_policy=st.sampled_from(RestartPolicy),
    ),
)
statuses = st.builds(
    WorkloadStatus,
    uid=text,
    generation=uint,
    state=st.sampled_from(WorkloadState),
    restarts=small,
    exit_code=st.none() | st.integers(-(2**31), 2**31),
    message=st.none() | text,
    rolled_back=st.booleans(),
    ready=st.none() | st.booleans(),
)
messages = st.one_of(
    st.builds(
        Hello,
        board=text,
        firmware=text,
        arch=text,
        runtimes=st.lists(st.sampled_from(Runtime), min_size=1, max_size=2).map(tuple),
        mem_free=uint,
        boot_count=uint,
        token=st.none() | st.binary(max_size=16),
    ),
    st.builds(DesiredDoc, gen=uint, workloads=st.lists(workloads, max_size=3).map(tuple)),
    st.builds(
        Report,
        gen=uint,
        workloads=st.lists(statuses, max_size=3).map(tuple),
        heap_free=st.none() | small,
        metrics=st.dictionaries(text, st.integers(-1000, 1000) | st.floats(allow_nan=False), max_size=3),
        error=st.none() | text,
    ),
    st.builds(
        LogBatch,
        uid=text,
        lines=st.lists(
            st.builds(LogLine, t=uint, stream=st.sampled_from(LogStream), text=text), max_size=3
        ).map(tuple),
        container=st.none() | text,
        clock=st.sampled_from(LogClock),
        dropped=small,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_typed_messages_round_trip_and_match_the_cddl(message: Any) -> None:
    data = message.to_cbor(max_size=None)
    again = type(message).from_cbor(data, max_size=None)
    assert again.to_cbor(max_size=None) == data
    if not _has_nan(message):  # NaN != NaN, so compare bytes only
        assert again == message
    assert validate_cddl(data, _rule(message)) == []


def _rule(message: Any) -> str:
    return next(rule for rule, cls in MESSAGES.items() if isinstance(message, cls))


def _has_nan(message: Any) -> bool:
    return "nan" in repr(message)
