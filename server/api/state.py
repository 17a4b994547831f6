"""Per-application state shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..auth.tokens import Principal, TokenIndex
from ..store import Store, Watcher
from .metrics import ApiMetrics


@dataclass(eq=False)
class ApiState:
    store: Store
    tokens: TokenIndex
    metrics: ApiMetrics
    max_body: int
    bookmark_interval: float
    min_request_timeout: float = 1800.0  # watches end after 1-2x this (kube-apiserver's default)
    watchers: set[Watcher] = field(default_factory=set)
    openapi: bytes | None = None
    shutting_down: bool = False


STATE = web.AppKey("fleetlet_api_state", ApiState)


@dataclass(eq=False)
class RequestMeta:
    """What the middleware needs to know about a request after its handler ran."""

    principal: Principal | None = None
    verb: str = ""
    resource: str = "nonresource"


# Typed request storage where aiohttp has it (3.12+); a plain string key otherwise.
_KEY = "fleetlet_request"
META: Any = web.RequestKey(_KEY, RequestMeta) if hasattr(web, "RequestKey") else _KEY


def request_meta(request: web.Request) -> RequestMeta:
    meta = request.get(META)
    if meta is None:
        meta = RequestMeta()
        request[META] = meta
    return meta  # type: ignore[no-any-return]
