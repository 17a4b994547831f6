"""fleetlet API client: :class:`ApiClient`, :class:`Informer`, config and the resource registry."""

from .api import ApiClient, Obj, WatchEvent, resource_path, resource_type, strip_for_write
from .config import ClientConfig, ConfigError, default_config_path, redact_token
from .errors import ApiError, ConnectionFailed
from .informer import Backoff, Informer, object_key
from .resources import API_VERSION, GROUP, REGISTRY, ResourceRegistry, ResourceType, UnknownResource, resolve

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
    "Informer",
    "Obj",
    "ResourceRegistry",
    "ResourceType",
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
