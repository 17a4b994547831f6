"""Loaders for the wire contract: the CDDL sources and the shared test vectors.

The vector files use a tagged JSON form (see schemas/vectors/README.md) because JSON has
neither integer map keys nor byte strings. ``untag`` turns that form into the Python value
a CBOR decoder yields, and ``tag`` goes the other way.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

WIRE_DIR = Path(__file__).resolve().parent / "wire"
VECTORS_DIR = Path(__file__).resolve().parent / "vectors"

# Message type (vector file stem) -> CDDL rule that describes it.
MESSAGE_RULES: dict[str, str] = {
    "hello": "hello",
    "registered": "registered",
    "desired": "desired",
    "report": "report",
    "log_batch": "log-batch",
    "blob_ref": "blob-ref",
}


class Vector(TypedDict):
    name: str
    description: str
    sender: NotRequired[str]  # "agent": only the SBC agent sends it (see schemas/vectors/README.md)
    hex: str
    decoded: Any


class InvalidVector(TypedDict):
    name: str
    hex: str
    error: str


class VectorFile(TypedDict):
    type: str
    rule: str
    vectors: list[Vector]
    invalid: list[InvalidVector]


def cddl_files() -> list[Path]:
    return sorted(WIRE_DIR.glob("*.cddl"))


def cddl_source() -> str:
    """All CDDL files concatenated; CDDL rules share one namespace."""
    return "\n".join(p.read_text(encoding="utf-8") for p in cddl_files())


def cddl_for_rule(rule: str) -> str:
    """A schema whose first rule (the root, for validators) is ``rule``."""
    return f"fleetlet-root = {rule}\n" + cddl_source()


_CONST_RE = re.compile(r"^([A-Za-z][A-Za-z0-9.\-]*)\s*=\s*(\d+)\s*(?:;.*)?$")
_ENUM_RE = re.compile(r"^([A-Za-z][A-Za-z0-9.\-]*)\s*=\s*&\((.*?)\)", re.S | re.M)
_ENUM_MEMBER_RE = re.compile(r"([A-Za-z][A-Za-z0-9\-]*)\s*:\s*(\d+)")


def cddl_constants() -> dict[str, int]:
    """Named integer constants (``name = 3``): the map keys and the version."""
    out: dict[str, int] = {}
    for line in cddl_source().splitlines():
        m = _CONST_RE.match(line.strip())
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def cddl_enums() -> dict[str, dict[str, int]]:
    """Enumerations written as ``name = &(member: N, ...)``."""
    out: dict[str, dict[str, int]] = {}
    for m in _ENUM_RE.finditer(cddl_source()):
        body = re.sub(r";[^\n]*", "", m.group(2))
        out[m.group(1)] = {k: int(n) for k, n in _ENUM_MEMBER_RE.findall(body)}
    return out


def load_vectors(message_type: str) -> VectorFile:
    path = VECTORS_DIR / f"{message_type}.json"
    data = cast(VectorFile, json.loads(path.read_text(encoding="utf-8")))
    data.setdefault("invalid", [])
    return data


def all_vector_files() -> list[VectorFile]:
    return [load_vectors(t) for t in MESSAGE_RULES]


def untag(obj: Any) -> Any:
    """Tagged JSON -> the value a CBOR decoder yields (dict, bytes, int, ...)."""
    if isinstance(obj, list):
        return [untag(x) for x in obj]
    if isinstance(obj, dict):
        if len(obj) != 1 or not next(iter(obj)).startswith("$"):
            # A plain object is a map with text keys (Appendix A uses these).
            return {k: untag(v) for k, v in obj.items()}
        ((key, val),) = obj.items()
        if key == "$map":
            return {_hashable(untag(k)): untag(v) for k, v in val}
        if key == "$bytes":
            return bytes.fromhex(val)
        if key == "$float":
            return float(val)
        raise ValueError(f"unknown tagged JSON form {key!r}")
    return obj


def tag(value: Any) -> Any:
    """Python CBOR value -> tagged JSON. Maps keep their insertion order."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": str(value)}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [tag(x) for x in value]
    if isinstance(value, dict):
        return {"$map": [[tag(k), tag(v)] for k, v in value.items()]}
    raise TypeError(f"no tagged JSON form for {type(value).__name__}")


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


_validators: dict[str, Any] = {}


def validate_cddl(data: bytes, rule: str, *, require_deterministic: bool = True) -> list[str]:
    """Errors from validating ``data`` against CDDL ``rule``; empty when valid.

    Uses cddl-verifier (a dev dependency, imported here so runtime users of this module
    do not need it). pycddl was tried first; it mismatches type choices inside arrays.
    """
    from cddl_verifier import Validator

    validator = _validators.get("all")
    if validator is None:
        validator = _validators["all"] = Validator(cddl_source())
    result = validator.validate(data, rule, require_deterministic=require_deterministic)
    return [str(e) for e in result.errors]
