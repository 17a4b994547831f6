"""Parsing ``/api/v1/...`` paths into (kind, namespace, name, subresource)."""

from __future__ import annotations

from dataclasses import dataclass

from .resources import BY_PLURAL, Kind, subresources_of
from .status import ApiError, not_found


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    namespace: str | None  # None: cluster-scoped kind, or a namespaced kind across all namespaces
    name: str | None
    subresource: str | None


def _kind(plural: str) -> Kind:
    kind = BY_PLURAL.get(plural)
    if kind is None:
        raise not_found(f'the server could not find the requested resource: unknown resource type "{plural}"')
    return kind


def _sub(kind: Kind, sub: str | None) -> str | None:
    if sub is not None and sub not in subresources_of(kind):
        raise not_found(f'{kind.plural} has no subresource "{sub}"')
    return sub


def parse_route(tail: str) -> Route:
    """``tail`` is the path after ``/api/v1/``."""
    segs = tail.strip("/").split("/") if tail.strip("/") else []
    if not segs or any(not s for s in segs) or len(segs) > 5:
        raise not_found(f"the server could not find the requested resource: /api/v1/{tail}")
    # /namespaces/<ns>/<plural>[/<name>[/<sub>]] for namespaced kinds; otherwise a Namespace itself.
    if segs[0] == "namespaces" and len(segs) >= 3 and segs[2] in BY_PLURAL:
        kind = _kind(segs[2])
        if not kind.namespaced:
            raise not_found(f"{kind.plural} are cluster-scoped: use /api/v1/{kind.plural}")
        name = segs[3] if len(segs) >= 4 else None
        sub = _sub(kind, segs[4]) if len(segs) == 5 else None
        return Route(kind, segs[1], name, sub)
    if len(segs) > 3:
        raise not_found(f"the server could not find the requested resource: /api/v1/{tail}")
    kind = _kind(segs[0])
    if kind.namespaced and len(segs) > 1:
        raise not_found(
            f"{kind.plural} are namespaced: use /api/v1/namespaces/<namespace>/{kind.plural}/{segs[1]}"
        )
    name = segs[1] if len(segs) >= 2 else None
    sub = _sub(kind, segs[2]) if len(segs) == 3 else None
    return Route(kind, None, name, sub)


__all__ = ["ApiError", "Route", "parse_route"]
