"""Request bodies (JSON or YAML, size-limited), merge patches, and JSON responses."""

from __future__ import annotations

from typing import Any

import yaml
from aiohttp import web

from .. import jsoncodec
from .status import ApiError, bad_request

try:  # the C loader is much faster; fall back when PyYAML was built without libyaml
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
# curl -d sends form-urlencoded: accept it as JSON, as a convenience for hand-written requests.
JSON_TYPES = frozenset(
    {"application/json", "", "application/octet-stream", "text/plain", "application/x-www-form-urlencoded"}
)
MERGE_PATCH_TYPES = frozenset(
    {
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",  # kubectl's default; treated as a merge patch
        "application/json",
        "application/x-www-form-urlencoded",
        "",
    }
)

_dumps = jsoncodec.dumps


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is too large: the limit is {limit} bytes", "RequestEntityTooLarge"
    )


async def read_body(request: web.Request, limit: int, *, patch: bool = False) -> Any:
    """The decoded body. 413 when too large, 415 for unknown media types, 400 when malformed."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    ctype = request.content_type if request.body_exists else ""
    if patch:
        if ctype == "application/json-patch+json":
            raise ApiError(
                415, "JSON patch is not supported: use application/merge-patch+json", "UnsupportedMediaType"
            )
        if ctype not in MERGE_PATCH_TYPES and ctype not in YAML_TYPES:
            raise ApiError(
                415,
                f"unsupported patch media type {ctype!r}: use application/merge-patch+json",
                "UnsupportedMediaType",
            )
    elif ctype not in JSON_TYPES and ctype not in YAML_TYPES:
        raise ApiError(
            415,
            f"unsupported media type {ctype!r}: send application/json or application/yaml",
            "UnsupportedMediaType",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    if len(raw) > limit:
        raise too_large(limit)
    if not raw.strip():
        raise bad_request("the request body is empty")
    if ctype in YAML_TYPES:
        try:
            return yaml.load(raw, Loader=_YamlLoader)
        except yaml.YAMLError as e:
            raise bad_request(f"malformed YAML body: {' '.join(str(e).split())}") from None
    try:
        return jsoncodec.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"malformed JSON body: {e}") from None


async def read_object(request: web.Request, limit: int, *, patch: bool = False) -> dict[str, Any]:
    body = await read_body(request, limit, patch=patch)
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be an object, not {type(body).__name__}")
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


def raw_response(raw: str | bytes, status: int = 200) -> web.Response:
    body = raw.encode() if isinstance(raw, str) else raw
    return web.Response(body=body, status=status, content_type="application/json")


def obj_response(obj: Any, status: int = 200) -> web.Response:
    return raw_response(_dumps(obj), status)


def error_response(err: ApiError) -> web.Response:
    return web.Response(body=err.body(), status=err.code, content_type="application/json")
