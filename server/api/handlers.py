"""Resource handlers: list, get, create, replace, patch, delete, status and binding."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import jsoncodec
from ..auth.rbac import RequestInfo, authorize
from ..store import Store, now_rfc3339
from ..store.errors import Conflict, Invalid, NotFound, StoreError
from . import admission
from .bodies import merge_patch, obj_response, raw_response, read_body, read_object
from .paths import Route, parse_route
from .resources import API_VERSION, DEFAULT_NAMESPACE, NAMESPACE_FINALIZER, SYSTEM_NAMESPACES, Kind
from .state import STATE, ApiState, request_meta
from .status import (
    ApiError,
    bad_request,
    forbidden,
    from_store_error,
    method_not_allowed,
    not_found,
    status_obj,
)
from .validation import validate
from .watch import serve_watch

Obj = dict[str, Any]
PATCH_RETRIES = 8


def _bool_param(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _int_param(request: web.Request, name: str, default: int = 0) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name}: invalid value {text!r}: must be a non-negative integer") from None
    if value < 0:
        raise bad_request(f"{name}: invalid value {text!r}: must be a non-negative integer")
    return value


def _verb(request: web.Request, route: Route) -> str:
    m = request.method
    if route.name is None:
        if m == "GET":
            return "watch" if _bool_param(request, "watch") else "list"
        if m == "POST":
            return "create"
    else:
        if route.subresource == "binding":
            if m == "POST":
                return "create"
        elif m == "GET":
            return "get"
        elif m == "PUT":
            return "update"
        elif m == "PATCH":
            return "patch"
        elif m == "DELETE" and route.subresource is None:
            return "delete"
    raise method_not_allowed(f"{m} is not supported on {request.path}")


API_PREFIX = "/api/v1/"


async def handle(request: web.Request) -> web.StreamResponse:
    """The router's entry for /api/v1/{tail}."""
    return await dispatch(request.app[STATE], request, request.match_info["tail"])


async def dispatch(api: ApiState, request: web.Request, tail: str) -> web.StreamResponse:
    """The single entry for /api/v1/<tail>: parse, authorize, dispatch."""
    namespace = _bindings_namespace(tail)
    if namespace is not None:
        return await bind_list(api, request, namespace)
    route = parse_route(tail)
    verb = _verb(request, route)
    meta = request_meta(request)
    meta.verb = verb
    meta.resource = route.kind.plural
    principal = meta.principal
    assert principal is not None  # the middleware authenticated every /api request
    info = RequestInfo(
        verb=verb,
        resource=route.kind.plural,
        namespace=route.namespace,
        name=route.name,
        subresource=route.subresource,
        field_selector=request.query.get("fieldSelector"),
        namespaced=route.kind.namespaced,
    )
    if verb == "create" and route.subresource is None:
        body = await read_object(request, api.max_body)
        _place(route, body)
        body_meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        assert isinstance(body_meta, dict)
        info.namespace = body_meta.get("namespace") if route.kind.namespaced else None
        info.name = body_meta.get("name") if isinstance(body_meta.get("name"), str) else None
        await authorize(principal, info, api.store)
        return await create(api, route.kind, body)
    await authorize(principal, info, api.store)
    if verb == "list":
        return await list_objects(api, request, route)
    if verb == "watch":
        return await serve_watch(api, request, route.kind, route.namespace)
    assert route.name is not None
    ns = route.namespace or ""
    if verb == "get":
        return raw_response(await api.store.get_raw(route.kind.plural, ns, route.name))
    if route.subresource == "binding":
        return await bind(api, route, await read_object(request, api.max_body))
    if verb == "update":
        return await replace(api, route, await read_object(request, api.max_body))
    if verb == "patch":
        return await patch(api, route, await read_object(request, api.max_body, patch=True))
    return await delete(api, request, route)


# -- reads ---------------------------------------------------------------------------------
async def list_objects(api: ApiState, request: web.Request, route: Route) -> web.Response:
    kind = route.kind
    try:
        result = await api.store.list_raw(
            kind.plural,
            route.namespace if kind.namespaced else None,
            label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"),
            limit=_int_param(request, "limit"),
            continue_token=request.query.get("continue") or None,
        )
    except Invalid as e:  # bad selector or continue token: the client's request is malformed
        raise bad_request(str(e)) from None
    meta: Obj = {"resourceVersion": str(result.resource_version)}
    if result.continue_token:
        meta["continue"] = result.continue_token
    if result.remaining is not None:
        meta["remainingItemCount"] = result.remaining
    # Items are the store's JSON texts: joined, never decoded and re-encoded.
    meta_json = jsoncodec.dumps(meta)
    head = f'{{"kind":"{kind.list_kind}","apiVersion":"{API_VERSION}","metadata":{meta_json},"items":['
    return raw_response("".join((head, ",".join(result.items), "]}")))


# -- create ---------------------------------------------------------------------------------
def _place(route: Route, body: Obj) -> None:
    """Reconcile the body's metadata.namespace with the URL (namespaced kinds default to "default")."""
    meta = body.get("metadata")
    if meta is None:
        meta = body["metadata"] = {}
    if not isinstance(meta, dict):
        return  # validation reports it
    if route.kind.namespaced:
        body_ns = meta.get("namespace")
        if route.namespace is not None:
            if body_ns and body_ns != route.namespace:
                raise bad_request(
                    f"the namespace of the provided object ({body_ns}) does not match the namespace "
                    f"sent on the request ({route.namespace})"
                )
            meta["namespace"] = route.namespace
        elif not body_ns:
            meta["namespace"] = DEFAULT_NAMESPACE
    else:
        meta.pop("namespace", None)


def _check_namespace(store: Store, namespace: str) -> None:
    ns = store.peek("namespaces", "", namespace)
    if ns is None:
        raise not_found(f'namespaces "{namespace}" not found: create the namespace first')
    if ns["metadata"].get("deletionTimestamp"):
        raise forbidden(
            f"unable to create new content in namespace {namespace} because it is being terminated"
        )


async def create(api: ApiState, kind: Kind, body: Obj) -> web.Response:
    causes, token = admission.admit_create(kind, body)
    validate(kind.kind, body, extra=causes)
    if kind.namespaced:
        _check_namespace(api.store, body["metadata"]["namespace"])
    # The body was parsed for this request alone, so the store may keep it without a copy,
    # and the stored JSON text goes back as is.
    raw = await api.store.create_raw(kind.plural, body, owned=True)
    if token is not None:
        created = jsoncodec.loads(raw)
        created.setdefault("status", {})["token"] = token
        return obj_response(created, 201)
    return raw_response(raw, 201)


# -- replace and patch ------------------------------------------------------------------------
def _check_identity(route: Route, body: Obj) -> Obj:
    meta = body.get("metadata")
    if meta is None:
        meta = body["metadata"] = {}
    if not isinstance(meta, dict):
        validate(route.kind.kind, body, route.name)
        raise bad_request("metadata must be an object")
    if meta.get("name") not in (None, route.name):
        raise bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL ({route.name})"
        )
    if route.kind.namespaced and meta.get("namespace") not in (None, route.namespace):
        raise bad_request(
            f"the namespace of the object ({meta.get('namespace')}) does not match the "
            f"namespace on the URL ({route.namespace})"
        )
    meta["name"] = route.name
    if route.namespace:
        meta["namespace"] = route.namespace
    return meta


def _rv(meta: Obj) -> str | None:
    rv = meta.get("resourceVersion")
    return str(rv) if rv not in (None, "") else None


def _status_only(kind: Kind, current: Obj, status: Any) -> Obj:
    new = copy.deepcopy(current)
    if status is None:
        new.pop("status", None)
    else:
        new["status"] = status
    return new


async def replace(api: ApiState, route: Route, body: Obj) -> web.Response:
    kind = route.kind
    assert route.name is not None
    meta = _check_identity(route, body)
    expected_rv = _rv(meta)
    if route.subresource == "status":
        return await _read_modify_write(
            api, route, lambda cur: _status_only(kind, cur, body.get("status")), expected_rv
        )
    if kind.status_subresource:
        body.pop("status", None)  # PUT of the object ignores status
    validate(kind.kind, body, route.name)

    def apply(current: Obj) -> Obj:
        new = copy.deepcopy(body) if kind.kind == "Secret" else body
        causes = admission.admit_update(kind, new, current)
        if kind.status_subresource and "status" in current:
            new["status"] = current["status"]
        if causes:
            validate(kind.kind, new, route.name, extra=causes)
        return new

    updated = await api.store.guaranteed_update(
        kind.plural, route.namespace or "", route.name, apply, expected_rv=expected_rv
    )
    return obj_response(updated)


async def patch(api: ApiState, route: Route, body: Obj) -> web.Response:
    kind = route.kind
    patch_meta = body.get("metadata")
    expected_rv = _rv(patch_meta) if isinstance(patch_meta, dict) else None

    def apply(current: Obj) -> Obj:
        if route.subresource == "status":
            patched = merge_patch(copy.deepcopy(current.get("status")), body.get("status", {}))
            return _status_only(kind, current, patched)
        new: Obj = merge_patch(copy.deepcopy(current), body)
        if kind.status_subresource:
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        return new

    return await _read_modify_write(api, route, apply, expected_rv)


def _constant(obj: Obj) -> Callable[[Obj], Obj]:
    return lambda _current: obj


async def _read_modify_write(
    api: ApiState, route: Route, change: Callable[[Obj], Obj], expected_rv: str | None
) -> web.Response:
    """Optimistic update: compute and validate off the writer, commit with a resourceVersion
    precondition, and retry on conflict unless the client gave its own precondition."""
    kind = route.kind
    assert route.name is not None
    ns = route.namespace or ""
    for _ in range(PATCH_RETRIES):
        current = await api.store.get(kind.plural, ns, route.name)
        cur_rv = str(current["metadata"].get("resourceVersion"))
        if expected_rv is not None and expected_rv != cur_rv:
            raise Conflict(
                f'Operation cannot be fulfilled on {kind.plural} "{route.name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
        new = change(current)
        new.setdefault("metadata", {})
        if isinstance(new["metadata"], dict):
            new["metadata"]["resourceVersion"] = cur_rv
            new["metadata"]["name"] = route.name
        causes = admission.admit_update(kind, new, current) if route.subresource is None else []
        validate(kind.kind, new, route.name, extra=causes)
        try:
            updated = await api.store.guaranteed_update(
                kind.plural, ns, route.name, _constant(new), expected_rv=cur_rv
            )
        except Conflict:
            if expected_rv is not None:
                raise
            continue
        return obj_response(updated)
    raise Conflict(f'{kind.plural} "{route.name}": too many concurrent changes; please retry')


# -- delete ------------------------------------------------------------------------------------
FINALIZER_FOR = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}


async def _delete_options(request: web.Request, limit: int) -> Obj:
    if not request.body_exists:
        return {}
    body = await read_body(request, limit)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request("DeleteOptions must be an object")
    return body


async def delete(api: ApiState, request: web.Request, route: Route) -> web.Response:
    kind = route.kind
    assert route.name is not None
    ns = route.namespace or ""
    opts = await _delete_options(request, api.max_body)
    policy = request.query.get("propagationPolicy") or opts.get("propagationPolicy") or "Background"
    if policy not in ("Background", "Foreground", "Orphan"):
        raise bad_request(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: '
            '"Background", "Foreground", "Orphan"'
        )
    pre = opts.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise bad_request("preconditions must be an object")
    expected_rv = str(pre["resourceVersion"]) if pre.get("resourceVersion") else None
    expected_uid = str(pre["uid"]) if pre.get("uid") else None
    if kind.kind == "Namespace" and route.name in SYSTEM_NAMESPACES:
        raise forbidden(f'namespaces "{route.name}" is forbidden: this namespace may not be deleted')
    finalizer = FINALIZER_FOR.get(policy)
    if finalizer is not None:

        def add_finalizer(cur: Obj) -> Obj:
            fins = cur["metadata"].setdefault("finalizers", [])
            if finalizer not in fins:
                fins.append(finalizer)
            return cur

        marked = await api.store.guaranteed_update(
            kind.plural, ns, route.name, add_finalizer, expected_rv=expected_rv, expected_uid=expected_uid
        )
        expected_rv, expected_uid = None, marked["metadata"]["uid"]
    deleted = await api.store.delete(
        kind.plural, ns, route.name, expected_rv=expected_rv, expected_uid=expected_uid
    )
    if kind.kind == "Namespace" and deleted["metadata"].get("deletionTimestamp"):
        deleted = await _mark_terminating(api.store, route.name, deleted)
    return obj_response(deleted)


async def _mark_terminating(store: Store, name: str, obj: Obj) -> Obj:
    def terminating(cur: Obj) -> Obj:
        status = cur.get("status") if isinstance(cur.get("status"), dict) else {}
        assert isinstance(status, dict)
        status["phase"] = "Terminating"
        cur["status"] = status
        return cur

    try:
        return await store.guaranteed_update(
            "namespaces", "", name, terminating, expected_uid=obj["metadata"]["uid"]
        )
    except NotFound:
        return obj


# -- binding -----------------------------------------------------------------------------------
async def bind(api: ApiState, route: Route, body: Obj) -> web.Response:
    assert route.name is not None
    await _bind_one(api, route.namespace or "", route.name, body)
    return obj_response(status_obj(201, "", success=True), 201)


async def _bind_one(api: ApiState, namespace: str, name: str, body: Obj) -> None:
    """Bind workload ``namespace/name`` to ``body.target`` (a Device), atomically; or raise."""
    target = body.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("name"), str) or not target["name"]:
        raise ApiError(422, f'Binding "{name}" is invalid: target.name: Required value', "Invalid")
    if target.get("kind", "Device") != "Device":
        raise ApiError(
            422,
            f'Binding "{name}" is invalid: target.kind: Unsupported value: '
            f'"{target.get("kind")}": supported values: "Device"',
            "Invalid",
        )
    meta = body.get("metadata")
    if isinstance(meta, dict) and meta.get("name") not in (None, name):
        raise bad_request(
            f"the binding's metadata.name ({meta.get('name')}) does not match the workload ({name})"
        )
    device_name = target["name"]
    device = api.store.peek("devices", "", device_name)
    if device is None:
        raise not_found(f'devices "{device_name}" not found')
    gateway = (device.get("spec") or {}).get("gateway")
    now = now_rfc3339()

    def set_binding(cur: Obj) -> Obj:
        spec = cur.setdefault("spec", {})
        if spec.get("deviceName"):
            raise Conflict(
                f'Operation cannot be fulfilled on workloads "{name}": workload {name} is '
                f'already bound to device "{spec["deviceName"]}"'
            )
        if cur["metadata"].get("deletionTimestamp"):
            raise Conflict(f'workloads "{name}" is being deleted and cannot be bound')
        spec["deviceName"] = device_name
        spec["gatewayName"] = gateway
        status = cur.setdefault("status", {})
        if status.get("phase") in (None, "Pending"):
            status["phase"] = "Scheduled"
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "Scheduled"]
        conds.append(
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "Bound",
                "message": f"bound to device {device_name} on gateway {gateway}",
                "lastTransitionTime": now,
            }
        )
        status["conditions"] = conds
        return cur

    await api.store.guaranteed_update("workloads", namespace, name, set_binding, expected_uid=None)


# -- many bindings in one request ----------------------------------------------------------
MAX_BINDINGS = 1000


def _bindings_namespace(tail: str) -> str | None:
    """The namespace of ``namespaces/<ns>/bindings``, else None (one suffix test per request)."""
    if not tail.endswith("/bindings"):
        return None
    segs = tail.strip("/").split("/")
    if len(segs) == 3 and segs[0] == "namespaces" and segs[1] and segs[2] == "bindings":
        return segs[1]
    return None


async def bind_list(api: ApiState, request: web.Request, namespace: str) -> web.Response:
    """``POST /api/v1/namespaces/<ns>/bindings``: a Binding (Kubernetes' form: metadata.name is
    the workload), or a BindingList of them, answered item by item.

    A scheduler binds hundreds of workloads a second. One request per binding cost the server
    and the scheduler more CPU in HTTP handling than the bindings themselves (bench/scheduler
    profiles); a list takes one request, and its bindings share one group commit. Each item
    succeeds or fails on its own, like separate requests would.
    """
    meta = request_meta(request)
    meta.verb, meta.resource = "create", "bindings"
    if request.method != "POST":
        raise method_not_allowed(f"{request.method} is not supported on {request.path}: POST a BindingList")
    principal = meta.principal
    assert principal is not None
    info = RequestInfo(
        verb="create", resource="workloads", namespace=namespace, subresource="binding", namespaced=True
    )
    await authorize(principal, info, api.store)
    body = await read_object(request, api.max_body)
    if body.get("kind") == "Binding":
        await _bind_one(api, namespace, _binding_name(body), body)
        return obj_response(status_obj(201, "", success=True), 201)
    if body.get("kind") != "BindingList":
        raise bad_request(f"the body must be a Binding or a BindingList, not {body.get('kind')!r}")
    items = body.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ApiError(422, "BindingList is invalid: items: must be a list of Bindings", "Invalid")
    if len(items) > MAX_BINDINGS:
        raise ApiError(
            422, f"BindingList is invalid: items: at most {MAX_BINDINGS} bindings per request", "Invalid"
        )

    async def one(item: Obj) -> None:
        await _bind_one(api, namespace, _binding_name(item), item)

    results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
    out: list[Obj] = []
    for item, r in zip(items, results, strict=True):
        status: Obj = {"code": 201}
        if r is not None:
            if not isinstance(r, StoreError):
                raise r  # a bug, not the client's mistake: the middleware answers 500
            err = from_store_error(r)
            status = {"code": err.code, "reason": err.reason, "message": err.message}
        meta = item.get("metadata")
        out.append(
            {"metadata": {"name": meta.get("name") if isinstance(meta, dict) else None}, "status": status}
        )
    return obj_response({"kind": "BindingList", "apiVersion": API_VERSION, "items": out})


def _binding_name(binding: Obj) -> str:
    """The workload a Binding names (its metadata.name), or a 422."""
    meta = binding.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(422, "Binding is invalid: metadata.name: Required value (the workload)", "Invalid")
    return name


__all__ = ["NAMESPACE_FINALIZER", "handle"]
