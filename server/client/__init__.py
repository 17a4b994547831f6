"""fleetlet API client: :class:`ApiClient`, :class:`Informer`, config and the resource registry.

``ApiClient`` and ``Informer`` load on first use: importing aiohttp costs about half a second,
which `fleetlet --help` and `fleetlet config view` should not pay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import ClientConfig, ConfigError, default_config_path, redact_token
from .errors import ApiError, ConnectionFailed
from .resources import API_VERSION, GROUP, REGISTRY, ResourceRegistry, ResourceType, UnknownResource, resolve

if TYPE_CHECKING:
    from .api import ApiClient, Obj, WatchEvent, resource_path, resource_type, strip_for_write
    from .informer import Backoff, HandlerRegistration, Informer, SharedInformers, object_key

_LAZY = {
    "ApiClient": "api",
    "Obj": "api",
    "WatchEvent": "api",
    "resource_path": "api",
    "resource_type": "api",
    "strip_for_write": "api",
    "Backoff": "informer",
    "Informer": "informer",
    "HandlerRegistration": "informer",
    "SharedInformers": "informer",
    "object_key": "informer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "API_VERSION",
    "GROUP",
    "REGISTRY",
    "ApiClient",
    "ApiError",
    "Backoff",
    "ClientConfig",
    "ConfigError",
    "ConnectionFailed",
    "HandlerRegistration",
    "Informer",
    "Obj",
    "ResourceRegistry",
    "ResourceType",
    "SharedInformers",
    "UnknownResource",
    "WatchEvent",
    "default_config_path",
    "object_key",
    "redact_token",
    "resolve",
    "resource_path",
    "resource_type",
    "strip_for_write",
]
