"""Kubernetes label and field selectors: parsing and matching.

Label selectors support ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``.
Field selectors support ``path=v``, ``path==v`` and ``path!=v`` where ``path`` is any dotted path into
the object (``metadata.name``, ``spec.gatewayName``, ``status.phase``); a missing field reads as "".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Invalid

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (s.strip() for s in parts) if p]


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    if not text:
        return ()
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        m = _EQ_RE.match(part)
        if m:
            op = "!=" if m.group(3) == "!=" else "="
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
            continue
        m = _SET_RE.match(part)
        if m:
            neg, key, setop, vals = m.group(1), m.group(2), m.group(4), m.group(5)
            if setop:
                if neg:
                    raise Invalid(f"invalid label selector {part!r}: '!' cannot be combined with {setop}")
                values = tuple(v.strip() for v in vals.split(",") if v.strip())
                reqs.append(Requirement(key, setop, values))
            else:
                reqs.append(Requirement(key, "!exists" if neg else "exists"))
            continue
        raise Invalid(f"invalid label selector {part!r}")
    return tuple(reqs)


def label_selector_from_match_labels(match_labels: Mapping[str, str]) -> tuple[Requirement, ...]:
    return tuple(Requirement(k, "=", (v,)) for k, v in sorted(match_labels.items()))


def labels_match(reqs: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        cur: Any = obj
        for step in self.path:
            if not isinstance(cur, Mapping):
                cur = None
                break
            cur = cur.get(step)
        if cur is None:
            text = ""
        elif isinstance(cur, bool):
            text = "true" if cur else "false"
        else:
            text = str(cur)
        return (text == self.value) != self.negate


def parse_field_selector(text: str | None) -> tuple[FieldRequirement, ...]:
    if not text:
        return ()
    reqs: list[FieldRequirement] = []
    for part in _split_top_level(text):
        m = re.match(r"^\s*([A-Za-z][A-Za-z0-9_.]*)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise Invalid(f"invalid field selector {part!r}")
        reqs.append(FieldRequirement(tuple(m.group(1).split(".")), m.group(2) == "!=", m.group(3)))
    return tuple(reqs)


def fields_match(reqs: tuple[FieldRequirement, ...], obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)


def make_predicate(
    label_selector: str | None = None, field_selector: str | None = None
) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate over whole objects, or None when nothing is selected (matches everything)."""
    lreqs = parse_label_selector(label_selector)
    freqs = parse_field_selector(field_selector)
    if not lreqs and not freqs:
        return None

    def predicate(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return labels_match(lreqs, meta.get("labels")) and fields_match(freqs, obj)

    return predicate
