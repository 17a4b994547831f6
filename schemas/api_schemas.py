"""API object schemas (schemas/api/*.json, JSON Schema draft 2020-12): loading and OpenAPI.

Each kind's file refers to shared definitions in ``common.json``. ``kind_schema`` returns a
self-contained ("bundled") copy with those definitions inlined under ``$defs`` and every
``common.json#/$defs/X`` reference rewritten to ``#/$defs/X``: local references validate faster
and need no registry. The OpenAPI document is generated from the same files, so the two can
never disagree.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["KindSpec", "common_defs", "generate_openapi", "kind_names", "kind_schema"]

_COMMON_PREFIX = "common.json#/$defs/"
_API_VERSION = "fleetlet.io/v1"


def _read(filename: str) -> dict[str, Any]:
    text = resources.files("fleetlet.schemas").joinpath("api", filename).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"schemas/api/{filename}: not a JSON object")
    return data


@cache
def common_defs() -> dict[str, Any]:
    defs = _read("common.json")["$defs"]
    assert isinstance(defs, dict)
    return _rewrite_refs(defs, "#/$defs/")  # type: ignore[no-any-return]


def _rewrite_refs(node: Any, target_prefix: str) -> Any:
    """A copy of ``node`` with ``common.json#/$defs/X`` refs pointing at ``target_prefix + X``."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                if v.startswith(_COMMON_PREFIX):
                    v = target_prefix + v[len(_COMMON_PREFIX) :]
                elif v.startswith("#/$defs/"):
                    v = target_prefix + v[len("#/$defs/") :]
            out[k] = _rewrite_refs(v, target_prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, target_prefix) for v in node]
    return node


def kind_names() -> tuple[str, ...]:
    """The file stems of every kind schema (e.g. "workload"), sorted."""
    folder = resources.files("fleetlet.schemas").joinpath("api")
    return tuple(
        sorted(
            e.name.removesuffix(".json")
            for e in folder.iterdir()
            if e.name.endswith(".json") and e.name != "common.json"
        )
    )


@cache
def _bundled(kind: str) -> dict[str, Any]:
    schema = _rewrite_refs(_read(f"{kind.lower()}.json"), "#/$defs/")
    assert isinstance(schema, dict)
    schema["$defs"] = {**common_defs(), **schema.get("$defs", {})}
    return schema


def kind_schema(kind: str) -> dict[str, Any]:
    """A self-contained JSON Schema for ``kind`` ("Workload" or "workload"); a fresh copy."""
    return copy.deepcopy(_bundled(kind))


@dataclass(frozen=True)
class KindSpec:
    """What the OpenAPI generator needs to know about a kind (the API registry provides these)."""

    kind: str
    plural: str
    namespaced: bool
    status_subresource: bool
    subresources: tuple[str, ...] = ()


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "kind": {"const": "Status"},
            "apiVersion": {"type": "string"},
            "metadata": {"type": "object"},
            "status": {"type": "string", "enum": ["Success", "Failure"]},
            "message": {"type": "string"},
            "reason": {"type": "string"},
            "code": {"type": "integer"},
            "details": {"type": "object"},
        },
    }


def _list_schema(kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "kind": {"const": f"{kind}List"},
            "apiVersion": {"const": _API_VERSION},
            "metadata": {
                "type": "object",
                "properties": {
                    "resourceVersion": {"type": "string"},
                    "continue": {"type": "string"},
                    "remainingItemCount": {"type": "integer"},
                },
            },
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{kind}"}},
        },
        "required": ["kind", "apiVersion", "metadata", "items"],
    }


def _param(
    name: str, where: str, schema: dict[str, Any], desc: str, required: bool = False
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": desc}


_LIST_PARAMS = [
    _param("labelSelector", "query", {"type": "string"}, "Label selector (k=v, k!=v, k in (a,b), k, !k)"),
    _param("fieldSelector", "query", {"type": "string"}, "Field selector on dotted paths (=, ==, !=)"),
    _param("limit", "query", {"type": "integer", "minimum": 0}, "Page size"),
    _param("continue", "query", {"type": "string"}, "Continue token from the previous page"),
    _param("watch", "query", {"type": "boolean"}, "Stream changes as newline-delimited JSON events"),
    _param("resourceVersion", "query", {"type": "string"}, "Watch changes after this revision"),
    _param("allowWatchBookmarks", "query", {"type": "boolean"}, "Send periodic BOOKMARK events"),
    _param("timeoutSeconds", "query", {"type": "integer", "minimum": 0}, "End the watch after N seconds"),
]


def _responses(ok: dict[str, Any], ok_code: str = "200") -> dict[str, Any]:
    err = {
        "description": "Error (a Status object)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
    }
    return {ok_code: ok, "default": err}


def _body(kind: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{kind}"}
    return {
        "required": True,
        "content": {"application/json": {"schema": ref}, "application/yaml": {"schema": ref}},
    }


def _obj_ok(kind: str, desc: str = "OK") -> dict[str, Any]:
    return {
        "description": desc,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{kind}"}}},
    }


def _paths_for(k: KindSpec) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    name_p = _param("name", "path", {"type": "string"}, f"{k.kind} name", True)
    ns_p = _param("namespace", "path", {"type": "string"}, "Namespace", True)
    list_ok = {
        "description": "A list, or a watch stream",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{k.kind}List"}}},
    }
    tag = [k.kind]
    paths[f"/api/v1/{k.plural}"] = {
        "get": {
            "operationId": f"list{k.kind}",
            "tags": tag,
            "parameters": _LIST_PARAMS,
            "responses": _responses(list_ok),
        },
        "post": {
            "operationId": f"create{k.kind}",
            "tags": tag,
            "requestBody": _body(k.kind),
            "responses": _responses(_obj_ok(k.kind, "Created"), "201"),
        },
    }
    if k.namespaced:
        coll = f"/api/v1/namespaces/{{namespace}}/{k.plural}"
        paths[coll] = {
            "parameters": [ns_p],
            "get": {
                "operationId": f"listNamespaced{k.kind}",
                "tags": tag,
                "parameters": _LIST_PARAMS,
                "responses": _responses(list_ok),
            },
            "post": {
                "operationId": f"createNamespaced{k.kind}",
                "tags": tag,
                "requestBody": _body(k.kind),
                "responses": _responses(_obj_ok(k.kind, "Created"), "201"),
            },
        }
        item = f"{coll}/{{name}}"
        item_params = [ns_p, name_p]
        prefix = "Namespaced"
    else:
        item = f"/api/v1/{k.plural}/{{name}}"
        item_params = [name_p]
        prefix = ""
    patch_body = {
        "required": True,
        "content": {
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
    delete_params = [
        _param(
            "propagationPolicy",
            "query",
            {"type": "string", "enum": ["Background", "Foreground", "Orphan"]},
            "How dependents are deleted",
        )
    ]
    paths[item] = {
        "parameters": item_params,
        "get": {
            "operationId": f"read{prefix}{k.kind}",
            "tags": tag,
            "responses": _responses(_obj_ok(k.kind)),
        },
        "put": {
            "operationId": f"replace{prefix}{k.kind}",
            "tags": tag,
            "requestBody": _body(k.kind),
            "responses": _responses(_obj_ok(k.kind)),
        },
        "patch": {
            "operationId": f"patch{prefix}{k.kind}",
            "tags": tag,
            "requestBody": patch_body,
            "responses": _responses(_obj_ok(k.kind)),
        },
        "delete": {
            "operationId": f"delete{prefix}{k.kind}",
            "tags": tag,
            "parameters": delete_params,
            "responses": _responses(_obj_ok(k.kind)),
        },
    }
    if k.status_subresource:
        paths[f"{item}/status"] = {
            "parameters": item_params,
            "get": {
                "operationId": f"read{prefix}{k.kind}Status",
                "tags": tag,
                "responses": _responses(_obj_ok(k.kind)),
            },
            "put": {
                "operationId": f"replace{prefix}{k.kind}Status",
                "tags": tag,
                "requestBody": _body(k.kind),
                "responses": _responses(_obj_ok(k.kind)),
            },
            "patch": {
                "operationId": f"patch{prefix}{k.kind}Status",
                "tags": tag,
                "requestBody": patch_body,
                "responses": _responses(_obj_ok(k.kind)),
            },
        }
    if "binding" in k.subresources:
        paths[f"{item}/binding"] = {
            "parameters": item_params,
            "post": {
                "operationId": f"create{prefix}{k.kind}Binding",
                "tags": tag,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Binding"}}},
                },
                "responses": _responses(
                    {
                        "description": "Bound (a Success Status)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                    },
                    "201",
                ),
            },
        }
    return paths


def _binding_list_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Many bindings in one request (answered item by item), or one Binding "
        "whose metadata.name is the workload.",
        "properties": {
            "apiVersion": {"const": _API_VERSION},
            "kind": {"const": "BindingList"},
            "items": {
                "type": "array",
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "properties": {
                        "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                        "target": {"$ref": "#/components/schemas/Binding/properties/target"},
                        "status": {
                            "type": "object",
                            "description": "In the answer: code 201 when bound, else the error",
                            "properties": {
                                "code": {"type": "integer"},
                                "reason": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
        "required": ["items"],
    }


def _bindings_path() -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/BindingList"}
    either = {"oneOf": [ref, {"$ref": "#/components/schemas/Binding"}]}
    return {
        "parameters": [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}],
        "post": {
            "operationId": "createNamespacedBindings",
            "tags": ["Workload"],
            "description": "Bind many workloads of a namespace to devices in one request (schedulers).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": either}}},
            "responses": _responses(
                {"description": "Each item's result", "content": {"application/json": {"schema": ref}}}
            ),
        },
    }


def _binding_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"const": _API_VERSION},
            "kind": {"const": "Binding"},
            "metadata": {"type": "object"},
            "target": {
                "type": "object",
                "properties": {"kind": {"const": "Device"}, "name": {"type": "string"}},
                "required": ["name"],
            },
        },
        "required": ["target"],
    }


def generate_openapi(kinds: Iterable[KindSpec], version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document (whose schema dialect is JSON Schema 2020-12) for the given kinds."""
    schemas: dict[str, Any] = {}
    for name, d in common_defs().items():
        schemas[name] = _rewrite_refs(d, "#/components/schemas/")
    paths: dict[str, Any] = {}
    kind_list = list(kinds)
    for k in kind_list:
        s = _rewrite_refs(_read(f"{k.kind.lower()}.json"), "#/components/schemas/")
        for key in ("$schema", "$id"):
            s.pop(key, None)
        for name, d in s.pop("$defs", {}).items():  # a kind's own definitions join the shared ones
            if name in schemas and schemas[name] != d:
                raise ValueError(f"{k.kind.lower()}.json: $defs/{name} clashes with another definition")
            schemas[name] = d
        schemas[k.kind] = s
        schemas[f"{k.kind}List"] = _list_schema(k.kind)
        paths.update(_paths_for(k))
    schemas["Status"] = _status_schema()
    schemas["Binding"] = _binding_schema()
    schemas["BindingList"] = _binding_list_schema()
    paths["/api/v1/namespaces/{namespace}/bindings"] = _bindings_path()
    plain = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths["/healthz"] = {"get": {"operationId": "healthz", "security": [], "responses": {"200": plain}}}
    paths["/readyz"] = {"get": {"operationId": "readyz", "responses": {"200": plain}}}
    paths["/metrics"] = {"get": {"operationId": "metrics", "responses": {"200": plain}}}
    paths["/version"] = {
        "get": {
            "operationId": "version",
            "responses": {
                "200": {
                    "description": "Version",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "This document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "fleetlet API",
            "version": version,
            "description": "Kubernetes-shaped API for fleets of edge devices (apiVersion fleetlet.io/v1).",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": k.kind} for k in kind_list],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "flt_<id>_<secret> tokens"}
            },
        },
    }
