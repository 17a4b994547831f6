"""Schema validation: one compiled Draft 2020-12 validator per kind; errors become 422 causes that
name the field path the way Kubernetes does (``spec.containers[0].image: Required value``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

import fastjsonschema
from fleetlet.schemas.api_schemas import kind_schema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .resources import KINDS
from .status import invalid

MAX_CAUSES = 20

Cause = dict[str, str]


@cache
def _full(kind: str) -> Draft202012Validator:
    """The jsonschema validator for ``kind``: exact error reports (compiled on first use)."""
    return Draft202012Validator(kind_schema(kind))


@cache
def _fast(kind: str) -> Callable[[Any], Any]:
    """A fastjsonschema check for ``kind``: a fast yes/no (compiled on first use).

    fastjsonschema compiles a schema to Python code and is about 15x faster, so valid objects (the
    common case) pay little; only invalid ones are re-checked by jsonschema for precise messages.
    Our schemas use nothing whose meaning differs between draft 7 and 2020-12, so both agree.
    """
    schema = {key: v for key, v in kind_schema(kind).items() if key not in ("$schema", "$id")}
    return fastjsonschema.compile(schema, use_default=False)  # type: ignore[no-any-return]


def check_schemas() -> None:
    """Check every kind's schema against the 2020-12 metaschema and compile both validators."""
    for k in KINDS:
        Draft202012Validator.check_schema(kind_schema(k.kind))
        _full(k.kind)
        _fast(k.kind)


def warm_validators() -> None:
    """Compile every kind's fast validator (about a second in all): run off the event loop at
    startup, so the first create of a kind does not pay for it."""
    for k in KINDS:
        _fast(k.kind)


def is_valid(kind: str, obj: dict[str, Any]) -> bool:
    try:
        _fast(kind)(obj)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def field_path(parts: Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "." in p or "/" in p:
            out += f"[{p}]"
        else:
            out += f".{p}" if out else p
    return out or "<root>"


def _join(parent: str, child: str) -> str:
    return child if parent == "<root>" else f"{parent}.{child}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "field": field, "message": f"{field}: {message}"}


def _one_of_required(schema: dict[str, Any]) -> list[str] | None:
    """For ``oneOf: [{required: [a]}, {required: [b]}]`` (pick one of), the names a, b."""
    branches = schema.get("oneOf")
    if not isinstance(branches, list) or not all(set(b) == {"required"} for b in branches):
        return None
    return [" + ".join(b["required"]) for b in branches]


def _causes(err: ValidationError) -> list[Cause]:
    path = field_path(err.absolute_path)
    v = err.validator
    schema = err.schema if isinstance(err.schema, dict) else {}
    instance = err.instance
    value: Any = err.validator_value
    if v == "required":
        missing = [n for n in value if isinstance(instance, dict) and n not in instance]
        return [_cause("FieldValueRequired", _join(path, n), "Required value") for n in missing]
    if v == "additionalProperties":
        known = set(schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in known) if isinstance(instance, dict) else []
        return [
            _cause("FieldValueForbidden", _join(path, k), f'Forbidden: unknown field "{k}"') for k in extra
        ]
    if v in ("enum", "const"):
        allowed = value if v == "enum" else [value]
        supported = ", ".join(_show(a) for a in allowed)
        return [
            _cause(
                "FieldValueNotSupported",
                path,
                f"Unsupported value: {_show(instance)}: supported values: {supported}",
            )
        ]
    if v == "type":
        return [
            _cause(
                "FieldValueTypeInvalid",
                path,
                f"Invalid value: {_show(instance)}: must be of type {err.validator_value}",
            )
        ]
    if v == "pattern":
        msg = schema.get("x-message") or f"must match the regular expression {err.validator_value!r}"
        return [_cause("FieldValueInvalid", path, f"Invalid value: {_show(instance)}: {msg}")]
    if v == "minItems" and err.validator_value == 1:
        return [_cause("FieldValueRequired", path, "Required value: must have at least 1 item")]
    if (
        v in ("minProperties", "maxProperties")
        and schema.get("minProperties") == schema.get("maxProperties") == 1
    ):
        one_of = ", ".join(schema.get("properties", {}))
        return [_cause("FieldValueInvalid", path, f"Invalid value: must specify exactly one of: {one_of}")]
    if v == "oneOf":
        names = _one_of_required(schema)
        if names is not None:
            present = [
                n for n in names if isinstance(instance, dict) and all(p in instance for p in n.split(" + "))
            ]
            if present:
                return [
                    _cause(
                        "FieldValueForbidden",
                        path,
                        f"Forbidden: may not specify more than one of: {', '.join(names)}",
                    )
                ]
            return [
                _cause("FieldValueRequired", path, f"Required value: must specify one of: {', '.join(names)}")
            ]
        # Alternatives by type (quantities, int-or-string): report the branch of the right type.
        sub = [e for e in err.context if not (e.validator == "type" and not e.relative_path)]
        if sub:
            return _causes(sorted(sub, key=lambda e: len(list(e.relative_path)))[0])
        types = [b.get("type") for b in schema.get("oneOf", []) if isinstance(b, dict) and b.get("type")]
        return [
            _cause(
                "FieldValueTypeInvalid",
                path,
                f"Invalid value: {_show(instance)}: must be of type {' or '.join(map(str, types))}",
            )
        ]
    return [_cause("FieldValueInvalid", path, f"Invalid value: {_show(instance)}: {err.message}")]


def schema_causes(kind: str, obj: dict[str, Any]) -> list[Cause]:
    errors = sorted(_full(kind).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    out: list[Cause] = []
    seen: set[str] = set()
    for err in errors:
        for c in _causes(err):
            if c["message"] not in seen:
                seen.add(c["message"])
                out.append(c)
    return out[:MAX_CAUSES]


def validate(kind: str, obj: dict[str, Any], name: str | None = None, extra: Sequence[Cause] = ()) -> None:
    """Raise a 422 ApiError naming every bad field of ``obj`` (plus ``extra`` causes)."""
    if not extra and is_valid(kind, obj):
        return
    causes = schema_causes(kind, obj) + list(extra)
    if causes:
        meta = obj.get("metadata")
        if name is None:
            name = str(meta.get("name") or meta.get("generateName") or "") if isinstance(meta, dict) else ""
        raise invalid(kind, name, causes)


def cause(field: str, reason: str, message: str) -> Cause:
    return _cause(reason, field, message)
