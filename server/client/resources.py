"""The resource registry: kind <-> plural <-> scope, with kubectl-style short names.

Mirrors the table in docs/API.md. Lookups are case-insensitive and accept the kind, the
plural, the singular, a short name, or any of those suffixed with ``.fleetlet.io``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

GROUP = "fleetlet.io"
API_VERSION = "fleetlet.io/v1"


@dataclass(frozen=True)
class ResourceType:
    kind: str
    plural: str
    namespaced: bool
    has_status: bool = False
    short_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """``workload.fleetlet.io``: the prefix kubectl prints (``workload.fleetlet.io/web created``)."""
        return f"{self.singular}.{GROUP}"

    def names(self) -> tuple[str, ...]:
        return (self.singular, self.plural, *self.short_names)


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("Namespace", "namespaces", namespaced=False, has_status=True, short_names=("ns",)),
    ResourceType("Gateway", "gateways", namespaced=False, has_status=True, short_names=("gw",)),
    ResourceType("Device", "devices", namespaced=False, has_status=True, short_names=("dev",)),
    ResourceType("Workload", "workloads", namespaced=True, has_status=True, short_names=("wl",)),
    ResourceType("Deployment", "deployments", namespaced=True, has_status=True, short_names=("deploy",)),
    ResourceType("Secret", "secrets", namespaced=True),
    ResourceType("ConfigMap", "configmaps", namespaced=True, short_names=("cm",)),
    ResourceType("Event", "events", namespaced=True, short_names=("ev",)),
    ResourceType("Lease", "leases", namespaced=True),
    ResourceType("Token", "tokens", namespaced=False),
)


class UnknownResource(LookupError):
    """No resource type matches a name; the message is kubectl's."""

    def __init__(self, name: str):
        super().__init__(f'the server doesn\'t have a resource type "{name}"')
        self.name = name


class ResourceRegistry:
    def __init__(self, resources: tuple[ResourceType, ...] = RESOURCES):
        self._all = resources
        self._by_name: dict[str, ResourceType] = {}
        for rt in resources:
            for n in (*rt.names(), rt.kind.lower()):
                self._by_name[n.lower()] = rt

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._all)

    def all(self) -> tuple[ResourceType, ...]:
        return self._all

    def resolve(self, name: str) -> ResourceType:
        """Any alias (``wl``, ``Workload``, ``workloads.fleetlet.io``) to its type, else UnknownResource."""
        key = name.strip().lower()
        for suffix in (f".{GROUP}", f".v1.{GROUP}"):
            if key.endswith(suffix):
                key = key[: -len(suffix)]
        rt = self._by_name.get(key)
        if rt is None:
            raise UnknownResource(name)
        return rt

    def for_kind(self, kind: str) -> ResourceType:
        """The type of a manifest's ``kind`` (exact kind name, as in objects)."""
        for rt in self._all:
            if rt.kind == kind:
                return rt
        # Be forgiving about case in hand-written manifests, but not about aliases.
        for rt in self._all:
            if rt.kind.lower() == kind.lower():
                return rt
        raise UnknownResource(kind)


REGISTRY = ResourceRegistry()


def resolve(name: str) -> ResourceType:
    return REGISTRY.resolve(name)


KindLike = str | ResourceType


def resource_type(kind: KindLike) -> ResourceType:
    return kind if isinstance(kind, ResourceType) else REGISTRY.resolve(kind)


DEFAULT_NAMESPACE = "default"


def resource_path(
    rt: ResourceType, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    """The URL path of a collection or an object; ``namespace=None`` on a namespaced list means all."""
    if rt.namespaced and namespace:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{rt.plural}"
    elif rt.namespaced and name is not None:
        path = f"/api/v1/namespaces/{DEFAULT_NAMESPACE}/{rt.plural}"
    else:
        path = f"/api/v1/{rt.plural}"
    if name is not None:
        if not name:
            raise ValueError("an object name must not be empty")
        path += "/" + quote(name, safe="")
        if subresource:
            path += "/" + subresource
    return path
