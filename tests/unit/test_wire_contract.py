"""Two rules of the wire contract (issue #4) checked over every vector, not by convention:

- Map keys are small integers: every map of a message, at any depth, has unsigned integer keys
  below 24 (one byte on the wire), except the text-keyed maps the CDDL declares
  (config, secrets, env, metrics, a docker volume's secret or config-map files).
- Every message carries the protocol version: key 0 holds 1 in every top-level message, and a
  message without it, or with another version, is refused by the CDDL and by the codec. Nested
  maps never use key 0; blob-ref is not a top-level message and has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fleetlet.gateway.wire import MESSAGES, WireError, decode_value, encode_value
from fleetlet.gateway.wire.keys import VERSION_KEY, WIRE_VERSION
from fleetlet.schemas.wire_loader import all_vector_files, validate_cddl

TOP_LEVEL = {f["rule"] for f in all_vector_files()} - {"blob-ref"}

VECTORS = [(f["rule"], v["name"], bytes.fromhex(v["hex"])) for f in all_vector_files() for v in f["vectors"]]


def _maps(value: Any, path: str = "") -> Iterator[tuple[str, dict[Any, Any]]]:
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from _maps(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _maps(v, f"{path}/{i}")


def _text_keyed(rule: str, path: str) -> bool:
    """Whether the map at ``path`` is one of the CDDL's text-keyed maps (a tstr => ... map)."""
    keys = [int(p) for p in path.strip("/").split("/") if p] if path else []
    if rule == "report":
        return keys == [5]  # report.metrics
    if rule == "desired":
        # workloads[i].config (8) / .secrets (9); workloads[i].containers[j].env (5);
        # workloads[i].volumes[j].secret (3) / .config-map (4)
        return (
            (len(keys) == 3 and keys[0] == 2 and keys[2] in (8, 9))
            or (len(keys) == 5 and keys[0] == 2 and keys[2] == 10 and keys[4] == 5)
            or (len(keys) == 5 and keys[0] == 2 and keys[2] == 11 and keys[4] in (3, 4))
        )
    return False


@pytest.mark.parametrize(("rule", "name", "data"), VECTORS, ids=lambda x: x if isinstance(x, str) else "-")
def test_every_map_key_is_a_small_uint_and_only_the_top_carries_the_version(
    rule: str, name: str, data: bytes
) -> None:
    message = decode_value(data)
    assert isinstance(message, dict)
    if rule in TOP_LEVEL:
        assert message[VERSION_KEY] == WIRE_VERSION and type(message[VERSION_KEY]) is int
        assert data[1:3] == bytes([0x00, 0x01]), "key 0 = 1 sorts first, two bytes after the map head"
    else:
        assert VERSION_KEY not in message
    for path, m in _maps(message):
        if _text_keyed(rule, path):
            assert all(isinstance(k, str) for k in m), path
            continue
        for key in m:
            assert type(key) is int and 0 <= key < 24, f"{name}{path}: key {key!r}"
        if path:
            assert VERSION_KEY not in m, f"{name}{path}: nested map uses key 0"


@pytest.mark.parametrize(("rule", "name", "data"), VECTORS, ids=lambda x: x if isinstance(x, str) else "-")
def test_without_the_version_or_with_another_a_message_is_refused(rule: str, name: str, data: bytes) -> None:
    if rule not in TOP_LEVEL:
        return
    message = decode_value(data)
    missing = {k: v for k, v in message.items() if k != VERSION_KEY}
    for variant, error in (
        (missing, f"{rule}.v: missing"),
        ({**message, VERSION_KEY: 2}, f"{rule}.v: unsupported"),
    ):
        encoded = encode_value(variant)
        assert validate_cddl(encoded, rule) != [], (name, variant.get(VERSION_KEY))
        with pytest.raises(WireError) as info:
            MESSAGES[rule].from_cbor(encoded)
        assert str(info.value).startswith(error), str(info.value)


def test_the_text_keyed_exceptions_are_met_in_the_vectors() -> None:
    # config, secrets, env, metrics and volume files all occur, so the key check above skips
    # real maps only.
    found = {
        (rule, path)
        for rule, _, data in VECTORS
        for path, _ in _maps(decode_value(data))
        if _text_keyed(rule, path)
    }
    leaves = {(rule, path.rsplit("/", 1)[-1]) for rule, path in found}
    assert leaves >= {("report", "5"), ("desired", "8"), ("desired", "9"), ("desired", "5")}, leaves
    volume_files = {path.split("/")[-1] for rule, path in found if rule == "desired" and "/11/" in path}
    assert volume_files == {"3", "4"}, found


def test_every_top_level_message_has_a_version_2_invalid_vector() -> None:
    # Both codecs run the invalid vectors (tests/unit/test_wire_codec.py on CPython,
    # tests/micropython/test_firmware_codec.py for the documents the firmware reads).
    for f in all_vector_files():
        names = {v["name"] for v in f["invalid"]}
        if f["rule"] in TOP_LEVEL:
            assert "version-2" in names, f["type"]
