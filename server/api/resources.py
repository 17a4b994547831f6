"""The registry of API kinds: names, scope and subresources (docs/API.md, "Kinds")."""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "fleetlet.io/v1"
GROUP = "fleetlet.io"


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    plural: str
    namespaced: bool
    status_subresource: bool
    subresources: tuple[str, ...] = ()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def describe(self, name: str) -> str:
        """How Kubernetes names an object in messages: Workload.fleetlet.io "web"."""
        return f'{self.kind}.{GROUP} "{name}"'


KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", False, True),
    Kind("Gateway", "gateways", False, True),
    Kind("Device", "devices", False, True),
    Kind("Workload", "workloads", True, True, ("status", "binding")),
    Kind("Deployment", "deployments", True, True, ("status",)),
    Kind("Secret", "secrets", True, False),
    Kind("ConfigMap", "configmaps", True, False),
    Kind("Event", "events", True, False),
    Kind("Lease", "leases", True, False),
    Kind("Token", "tokens", False, False),
)

BY_PLURAL: dict[str, Kind] = {k.plural: k for k in KINDS}
BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}

# Namespaces that always exist: created at startup and protected from deletion.
DEFAULT_NAMESPACE = "default"
NODE_LEASE_NAMESPACE = "fleetlet-node-lease"
SYSTEM_NAMESPACE = "fleetlet-system"  # leader-election leases of the scheduler and controllers
SYSTEM_NAMESPACES = (DEFAULT_NAMESPACE, NODE_LEASE_NAMESPACE, SYSTEM_NAMESPACE)

# Namespaces carry this finalizer; the namespace controller removes it once the namespace is empty.
NAMESPACE_FINALIZER = "fleetlet.io/namespace"


def subresources_of(kind: Kind) -> tuple[str, ...]:
    subs = kind.subresources
    if kind.status_subresource and "status" not in subs:
        subs = ("status", *subs)
    return subs
