"""The CDDL in schemas/wire against the vectors, both codecs' key tables, and mutations.

Validation uses cddl-verifier (pure Python). pycddl was tried first and rejected: it
matches only the first alternative of a named type choice inside an array, so
``[+ runtime]`` refused "docker".
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetlet.gateway.wire import MESSAGES, WireError, encode_value
from fleetlet.gateway.wire.keys import ENUM_CLASSES, KEY_CLASSES, VERSION_KEY, WIRE_VERSION
from fleetlet.schemas.wire_loader import (
    MESSAGE_RULES,
    all_vector_files,
    cddl_constants,
    cddl_enums,
    cddl_source,
    untag,
    validate_cddl,
)

FIRMWARE_WIRE = Path(__file__).resolve().parents[2] / "device-firmware" / "micropython" / "wire.py"

VECTORS = [(f["rule"], f["type"], v) for f in all_vector_files() for v in f["vectors"]]
INVALID = [(f["rule"], v) for f in all_vector_files() for v in f["invalid"]]


def _id(x: Any) -> str | None:
    if isinstance(x, str):
        return x
    if isinstance(x, dict) and isinstance(x.get("name"), str):
        return str(x["name"])
    return "-"  # the mutated message itself: the `where` id already names it


def test_schema_has_no_diagnostics() -> None:
    from cddl_verifier import schema_diagnostics

    assert schema_diagnostics(cddl_source()) == ()


@pytest.mark.parametrize(("rule", "message_type", "vector"), VECTORS, ids=_id)
def test_vector_is_valid_and_deterministic(rule: str, message_type: str, vector: Any) -> None:
    assert validate_cddl(bytes.fromhex(vector["hex"]), rule) == []


@pytest.mark.parametrize(("rule", "vector"), INVALID, ids=_id)
def test_invalid_vector_breaks_the_cddl(rule: str, vector: Any) -> None:
    assert validate_cddl(bytes.fromhex(vector["hex"]), rule) != []


def test_validator_catches_non_deterministic_encoding() -> None:
    # Report minimal with gen written as 0x1800 (a non-shortest head).
    assert any("shortest" in e for e in validate_cddl(bytes.fromhex("a20001011800"), "report"))


def _wrong_type(value: Any) -> Any:
    # A replacement no CDDL field that accepted `value` also accepts.
    if isinstance(value, bool | int | bytes | list | dict):
        return "wrong"
    return 0  # text


def _mutations(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every copy of obj with one structured field (int-keyed map value or log line item)
    replaced by a wrong-typed value. Values of text-keyed maps (config, env, metrics) are
    left alone: several of them accept any scalar."""
    if isinstance(obj, dict) and all(isinstance(k, int) for k in obj):
        for key, value in obj.items():
            mutated = copy.deepcopy(obj)
            mutated[key] = _wrong_type(value)
            yield f"{path}/{key}", mutated
            for sub_path, sub in _mutations(value, f"{path}/{key}"):
                mutated = copy.deepcopy(obj)
                mutated[key] = sub
                yield sub_path, mutated
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            for sub_path, sub in _mutations(item, f"{path}/{i}"):
                mutated = copy.deepcopy(obj)
                mutated[i] = sub
                yield sub_path, mutated


MUTATIONS = [
    (rule, f"{v['name']}{path}", mutated)
    for rule, message_type, v in VECTORS
    for path, mutated in _mutations(untag(v["decoded"]))
]


def test_mutations_cover_every_vector() -> None:
    names = {m[1].split("/")[0] for m in MUTATIONS}
    assert names >= {v["name"] for _, _, v in VECTORS}
    assert len(MUTATIONS) > 100


@pytest.mark.parametrize(("rule", "where", "mutated"), MUTATIONS, ids=_id)
def test_wrong_typed_field_fails_cddl_and_codec(rule: str, where: str, mutated: Any) -> None:
    data = encode_value(mutated)
    assert validate_cddl(data, rule) != [], f"CDDL accepted a wrong type at {where}"
    with pytest.raises(WireError):
        MESSAGES[rule].from_cbor(data)


def test_log_line_items_are_typed() -> None:
    good = {0: 1, 1: "u", 3: [[5, 0, "x"]]}
    assert validate_cddl(encode_value(good), "log-batch") == []
    for i in range(3):
        bad = copy.deepcopy(good)
        bad[3][0][i] = _wrong_type(bad[3][0][i])
        assert validate_cddl(encode_value(bad), "log-batch") != [], i


# ---------------------------------------------------------------- key tables


def test_gateway_key_classes_match_the_cddl_constants() -> None:
    constants = cddl_constants()
    assert constants.pop("v") == VERSION_KEY
    assert constants.pop("wire-version") == WIRE_VERSION
    from_cddl = {name: value for name, value in constants.items() if "." in name}
    assert {n.split(".")[0] for n in from_cddl} == set(KEY_CLASSES)
    from_code = {
        f"{prefix}.{member.name.lower().replace('_', '-')}": member.value
        for prefix, cls in KEY_CLASSES.items()
        for member in cls
    }
    assert from_code == from_cddl


def test_gateway_enums_match_the_cddl_enums() -> None:
    enums = cddl_enums()
    assert set(enums) == set(ENUM_CLASSES)
    for rule, cls in ENUM_CLASSES.items():
        assert enums[rule] == {m.name.lower().replace("_", "-"): m.value for m in cls}, rule


FIRMWARE_ENUM_PREFIX = {
    "restart-policy": "RESTART",
    "workload-state": "STATE",
    "log-clock": "CLOCK",
    "log-stream": "STREAM",
}
# Keys the firmware never reads: the insides of docker workloads and containers, the
# per-container statuses only the SBC agent reports, and the gateway's registry mirror (only
# the SBC agent pulls images).
FIRMWARE_OMITS = {"ctr", "port", "res", "probe", "http", "vol", "mnt", "cs", "mirror"}
FIRMWARE_OMITS_KEYS = {"wl.volumes", "wl.network", "ws.containers", "reg.mirror"}
FIRMWARE_OMITS_ENUMS = {"network-mode"}


def _firmware_constants() -> dict[str, int]:
    text = FIRMWARE_WIRE.read_text(encoding="utf-8")
    return {m[1]: int(m[2]) for m in re.finditer(r"^([A-Z][A-Z0-9_]*) = const\((\d+)\)", text, re.M)}


def test_firmware_constants_match_the_cddl() -> None:
    firmware = _firmware_constants()
    expected = {"V": cddl_constants()["v"], "VERSION": cddl_constants()["wire-version"]}
    for name, value in cddl_constants().items():
        prefix, _, rest = name.partition(".")
        if rest and prefix not in FIRMWARE_OMITS and name not in FIRMWARE_OMITS_KEYS:
            expected[f"{prefix}_{rest}".upper().replace("-", "_")] = value
    for rule, members in cddl_enums().items():
        if rule in FIRMWARE_OMITS_ENUMS:
            continue
        for member, value in members.items():
            expected[f"{FIRMWARE_ENUM_PREFIX[rule]}_{member}".upper().replace("-", "_")] = value
    assert firmware == expected


def test_every_message_rule_has_a_vector_file() -> None:
    assert {f["type"] for f in all_vector_files()} == set(MESSAGE_RULES)
    for rule in MESSAGE_RULES.values():
        assert re.search(rf"^{re.escape(rule)} = ", cddl_source(), re.M), rule
