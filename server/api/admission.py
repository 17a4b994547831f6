"""Admission: defaults and server-side conversions applied before validation and storage.

Defaulting is defensive: it only fills fields whose parents have the right type, so a malformed
object reaches validation intact and gets a 422 that names the bad field.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

from ..auth.tokens import generate_token, hash_token, random_id
from ..store import now_rfc3339
from .resources import API_VERSION, NAMESPACE_FINALIZER, Kind
from .validation import Cause, cause

Obj = dict[str, Any]

SERVER_OWNED_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")
DEFAULT_STRATEGY: dict[str, Any] = {
    "waves": ["100%"],
    "maxUnavailable": "25%",
    "minReadySeconds": 0,
    "failureThreshold": 0.5,
    "autoRollback": True,
}


def _dict(parent: Obj, key: str) -> Obj | None:
    """parent[key] as a dict, created when absent; None when it is present but not a dict."""
    value = parent.setdefault(key, {})
    return value if isinstance(value, dict) else None


def default_workload_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    app = spec.get("app")
    if spec.get("runtime") == "micropython" and isinstance(app, dict):
        app.setdefault("entry", "main")


def _default_deployment(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    placement = _dict(spec, "placement")
    if placement is not None:
        placement.setdefault("mode", "Replicas")
        if placement["mode"] == "Replicas":
            placement.setdefault("replicas", 1)
    strategy = _dict(spec, "strategy")
    if strategy is not None:
        for k, v in DEFAULT_STRATEGY.items():
            strategy.setdefault(k, list(v) if isinstance(v, list) else v)
    spec.setdefault("paused", False)
    spec.setdefault("revisionHistoryLimit", 10)
    template = spec.get("template")
    if isinstance(template, dict):
        default_workload_spec(template.get("spec"))


def _default_device(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("board"), str):
        return []
    try:
        from fleetlet.hardware.profiles import load_profile
    except ImportError:  # hardware profiles not installed: nothing to default from
        return []
    board = spec["board"]
    try:
        profile = load_profile(board)
    except LookupError as e:
        return [cause("spec.board", "FieldValueNotSupported", f"Unsupported value: {board!r}: {e}")]
    except ValueError as e:  # a broken profile file is a server problem, but say which
        return [cause("spec.board", "FieldValueInvalid", f"Invalid value: {board!r}: {e}")]
    spec.setdefault("arch", profile.arch)
    spec.setdefault("runtimes", list(profile.runtimes))
    capacity = profile.capacity() if callable(profile.capacity) else profile.capacity
    allocatable: Any = profile.allocatable
    if hasattr(allocatable, "as_quantities"):
        allocatable = allocatable.as_quantities()
    spec.setdefault("capacity", dict(capacity))
    spec.setdefault("allocatable", dict(allocatable))
    return []


def _convert_secret(obj: Obj) -> list[Cause]:
    obj.setdefault("type", "Opaque")
    causes: list[Cause] = []
    string_data = obj.get("stringData")
    data = obj.get("data")
    if data is None:
        data = obj["data"] = {}
    if isinstance(string_data, dict) and isinstance(data, dict):
        if all(isinstance(v, str) for v in string_data.values()):
            for k, v in string_data.items():
                data[k] = base64.b64encode(v.encode()).decode()
            del obj["stringData"]
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, str):
                try:
                    base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    causes.append(
                        cause(
                            f"data[{k}]",
                            "FieldValueInvalid",
                            "Invalid value: <secret>: must be base64 (use stringData for plain text)",
                        )
                    )
    return causes


def _default_event(obj: Obj) -> None:
    now = now_rfc3339()
    obj.setdefault("type", "Normal")
    obj.setdefault("count", 1)
    obj.setdefault("firstTimestamp", now)
    obj.setdefault("lastTimestamp", obj["firstTimestamp"])


def _token_expiry(spec: Obj) -> None:
    ttl = spec.get("ttlSeconds")
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        spec["expiresAt"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        del spec["ttlSeconds"]


def _prepare_token(obj: Obj) -> str | None:
    """Name the token, hash a fresh secret into spec.tokenHash; return the plaintext (shown once)."""
    meta = obj["metadata"]
    if not meta.get("name"):
        meta["name"] = str(meta.pop("generateName", "") or "") + random_id(
            10 if not meta.get("generateName") else 5
        )
    obj.pop("status", None)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    _token_expiry(spec)
    if spec.get("tokenHash"):
        return None  # the caller brought its own token and only registers its hash
    name = meta["name"]
    if not isinstance(name, str) or "_" in name:
        return None  # validation rejects the name
    token = generate_token(name)
    spec["tokenHash"] = hash_token(token)
    return token


def admit_create(kind: Kind, obj: Obj) -> tuple[list[Cause], str | None]:
    """Defaults for a new object. Returns extra 422 causes and, for Tokens, the plaintext token."""
    obj.setdefault("apiVersion", API_VERSION)
    obj.setdefault("kind", kind.kind)
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    causes: list[Cause] = []
    token: str | None = None
    if not isinstance(meta, dict):
        return causes, None
    for k in SERVER_OWNED_META:
        meta.pop(k, None)
    if not meta.get("name") and not meta.get("generateName") and kind.kind != "Token":
        causes.append(
            cause("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
        )
    if kind.status_subresource:
        obj["status"] = {}  # status is the controllers' to write, through .../status
    status = obj.get("status")
    if kind.kind == "Namespace":
        finalizers = meta.setdefault("finalizers", [])
        if isinstance(finalizers, list) and NAMESPACE_FINALIZER not in finalizers:
            finalizers.append(NAMESPACE_FINALIZER)
        if isinstance(status, dict):
            status["phase"] = "Active"
    elif kind.kind == "Workload":
        if isinstance(status, dict):
            status["phase"] = "Pending"
    elif kind.kind == "Device":
        if isinstance(status, dict):
            status["phase"] = "Unknown"
        causes += _default_device(obj)
    elif kind.kind == "Event":
        _default_event(obj)
    elif kind.kind == "Token":
        token = _prepare_token(obj)
    causes += _default_common(kind, obj)
    return causes, token


def _default_common(kind: Kind, obj: Obj) -> list[Cause]:
    """Defaults and conversions applied on create and on every update."""
    if kind.kind == "Workload":
        default_workload_spec(obj.get("spec"))
    elif kind.kind == "Deployment":
        _default_deployment(obj)
    elif kind.kind == "Secret":
        return _convert_secret(obj)
    elif kind.kind == "Token":
        obj.pop("status", None)  # the plaintext token is never stored
        spec = obj.get("spec")
        if isinstance(spec, dict):
            _token_expiry(spec)
    return []


IMMUTABLE_WORKLOAD_FIELDS = ("deviceName", "gatewayName")


def admit_update(kind: Kind, new: Obj, current: Obj) -> list[Cause]:
    """Defaults for a replacement object and the rules that compare it with the current one."""
    new.setdefault("apiVersion", API_VERSION)
    new.setdefault("kind", kind.kind)
    causes = _default_common(kind, new)
    if kind.kind == "Workload":
        new_spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
        cur_spec = current.get("spec") or {}
        assert isinstance(new_spec, dict)
        for f in IMMUTABLE_WORKLOAD_FIELDS:
            if new_spec.get(f) != cur_spec.get(f):
                causes.append(
                    cause(
                        f"spec.{f}",
                        "FieldValueForbidden",
                        "Forbidden: set only by the binding subresource; immutable once bound",
                    )
                )
    return causes
