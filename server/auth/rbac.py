"""Role-based authorization: the four roles of docs/API.md ("Auth").

Verbs: get, list, watch, create, update, patch, delete (``subresource`` is "status", "binding" or
None). The gateway role is scoped to one gateway G: its own objects, and lists or watches only when
the field selector pins them to G, so a gateway can never enumerate another gateway's devices.
Secrets and ConfigMaps, as Kubernetes' node authorizer has it: G may get one that a Workload
bound to G references (``workload_references``), or list and watch it alone, in its namespace,
with ``fieldSelector=metadata.name=<name>`` (the kubelet's Watch change-detection strategy).
A watch is authorized when it starts; the gateway stops it when the last reference goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.resources import NODE_LEASE_NAMESPACE
from ..api.status import ApiError
from ..client.references import workload_references
from ..store import Store
from ..store.selectors import parse_field_selector
from .tokens import Principal

READ_VERBS = frozenset({"get", "list", "watch"})
ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
CLUSTER_READ_ONLY_FOR_OPERATOR = frozenset({"devices", "gateways", "namespaces"})
HIDDEN_FROM_VIEWER = frozenset({"secrets", "tokens"})


@dataclass(slots=True)
class RequestInfo:
    verb: str
    resource: str  # plural
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    field_selector: str | None = None
    namespaced: bool = False


def _forbidden(p: Principal, info: RequestInfo, why: str = "") -> ApiError:
    what = f'resource "{info.resource}"'
    if info.subresource:
        what += f' subresource "{info.subresource}"'
    where = f' in namespace "{info.namespace}"' if info.namespace else ""
    if info.namespaced and info.namespace is None and info.verb in ("list", "watch"):
        where = " at the cluster scope"
    name = f' "{info.name}"' if info.name else ""
    message = f'{info.resource}{name} is forbidden: User "{p.user}" cannot {info.verb} {what}{where}'
    if why:
        message += f": {why}"
    return ApiError(403, message, "Forbidden", {"kind": info.resource, "name": info.name or ""})


def _selects(field_selector: str | None, path: str, value: str) -> bool:
    """Whether the selector requires ``path == value`` (so every result belongs to that value)."""
    try:
        reqs = parse_field_selector(field_selector)
    except Exception:
        return False
    want = tuple(path.split("."))
    return any(r.path == want and not r.negate and r.value == value for r in reqs)


def _selected_names(field_selector: str | None) -> list[str]:
    """The names a selector requires (``metadata.name=<name>``). Requirements are ANDed, so any
    one of them alone bounds the answer to that object."""
    try:
        reqs = parse_field_selector(field_selector)
    except Exception:
        return []
    return [r.value for r in reqs if r.path == ("metadata", "name") and not r.negate and r.value]


def _in_namespaces(p: Principal, info: RequestInfo) -> bool:
    if p.namespaces is None or not info.namespaced:
        return True
    return info.namespace is not None and info.namespace in p.namespaces


async def authorize(p: Principal, info: RequestInfo, store: Store) -> None:
    """Raise a 403 ApiError unless ``p`` may do ``info``."""
    role = p.role
    if role == "admin":
        return
    # Subresources that reach through a gateway to devices (docs/API.md, "Logs"). Logs often carry
    # what an app printed of its config and secrets, so viewers (who may not read Secrets) may not.
    if info.subresource == "log" and role != "operator":
        raise _forbidden(p, info, "reading logs needs the admin or operator role")
    if info.subresource == "tunnel" and role != "gateway":
        raise _forbidden(p, info, "only a gateway opens and answers its own tunnel")
    if role == "operator":
        if info.resource == "tokens":
            raise _forbidden(p, info, "operators have no access to tokens")
        if info.resource in CLUSTER_READ_ONLY_FOR_OPERATOR:
            if info.verb in READ_VERBS:
                return
            raise _forbidden(p, info, "operators have read-only access to cluster-scoped kinds")
        if not _in_namespaces(p, info):
            raise _forbidden(p, info, f"this token is limited to namespaces {sorted(p.namespaces or ())}")
        return
    if role == "viewer":
        if info.resource in HIDDEN_FROM_VIEWER:
            raise _forbidden(p, info, f"viewers cannot read {info.resource}")
        if info.verb not in READ_VERBS:
            raise _forbidden(p, info, "viewers have read-only access")
        if not _in_namespaces(p, info):
            raise _forbidden(p, info, f"this token is limited to namespaces {sorted(p.namespaces or ())}")
        return
    if role == "gateway" and p.gateway:
        await _authorize_gateway(p, p.gateway, info, store)
        return
    raise _forbidden(p, info, f"unknown role {role!r}")


async def _authorize_gateway(p: Principal, g: str, info: RequestInfo, store: Store) -> None:
    verb, res, sub = info.verb, info.resource, info.subresource
    listing = verb in ("list", "watch")
    if res == "gateways":
        if listing and _selects(info.field_selector, "metadata.name", g):
            return
        if not listing and info.name == g and verb in ("get", "create", "update", "patch"):
            return
        raise _forbidden(p, info, f'a gateway token may only access its own Gateway "{g}"')
    if res == "leases":
        if (
            info.namespace == NODE_LEASE_NAMESPACE
            and info.name == g
            and verb in ("get", "create", "update", "patch")
        ):
            return
        raise _forbidden(p, info, f'a gateway token may only access its Lease "{NODE_LEASE_NAMESPACE}/{g}"')
    if res in ("devices", "workloads"):
        path = "spec.gateway" if res == "devices" else "spec.gatewayName"
        if listing:
            if _selects(info.field_selector, path, g):
                return
            raise _forbidden(
                p, info, f"a gateway token must list or watch {res} with fieldSelector {path}={g}"
            )
        allowed = verb == "get" or (sub == "status" and verb in ("update", "patch"))
        if allowed and info.name:
            obj = store.peek(res, info.namespace or "", info.name)
            if obj is None:
                return  # let the handler answer 404 (existence is not a secret worth a 403)
            if _get_path(obj, path) == g:
                return
        raise _forbidden(
            p, info, f"a gateway token may only read {res} with {path}={g}, and update their status"
        )
    if res in ("secrets", "configmaps"):
        ns = info.namespace
        if ns and verb == "get" and info.name and await _referenced(store, g, res, ns, info.name):
            return
        if ns and listing and not info.name:
            for name in _selected_names(info.field_selector):
                if await _referenced(store, g, res, ns, name):
                    return
        raise _forbidden(
            p,
            info,
            f"a gateway token may only get {res} referenced by workloads bound to it, or list and "
            "watch one of them with fieldSelector metadata.name=<name> in its namespace",
        )
    if res == "events" and verb == "create":
        return
    raise _forbidden(p, info, "not permitted for a gateway token")


def _get_path(obj: dict[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for step in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(step)
    return cur


async def _referenced(store: Store, g: str, resource: str, namespace: str, name: str) -> bool:
    """Whether a Workload in ``namespace`` bound to gateway ``g`` refers to this Secret/ConfigMap."""
    bound = await store.list("workloads", namespace, field_selector=f"spec.gatewayName={g}")
    for wl in bound.items:
        secrets, configmaps = workload_references(wl.get("spec") or {})
        if name in (secrets if resource == "secrets" else configmaps):
            return True
    return False
