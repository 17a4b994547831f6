"""Provider interfaces, in the style of virtual-kubelet's ``PodLifecycleHandler`` and ``NodeProvider``.

The gateway's upstream half (gateway/upstream.py) watches the API and calls a
:class:`WorkloadProvider` for every Workload bound to one of its devices, tells a
:class:`DeviceSource` about its Devices, and asks a :class:`NodeProvider` what to report on
the Gateway object; :class:`GatewayProvider` is the three together, which is all the upstream
knows of a provider. The CoAP device provider (gateway/coap_provider.py) is one
implementation: it turns Workloads into per-device desired documents. Another transport (say
MQTT, or OSCORE-only devices) would be another implementation of the same protocols
(tests/gateway/test_upstream.py plugs in a second one).

Workloads and devices are passed as the API's JSON objects (``dict``), as virtual-kubelet
passes ``*v1.Pod``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

Obj = dict[str, Any]


@runtime_checkable
class WorkloadProvider(Protocol):
    """Lifecycle of the workloads bound to this gateway's devices.

    Calls are idempotent: ``create_workload`` of a workload the provider already has is an
    update, ``delete_workload`` of an unknown one is a no-op. Errors a provider cannot act on
    (a missing ConfigMap, say) are reported through the workload's status, not raised.
    """

    async def create_workload(self, workload: Obj) -> None: ...

    async def update_workload(self, workload: Obj) -> None: ...

    async def delete_workload(self, workload: Obj) -> None: ...

    async def get_workload_status(self, namespace: str, name: str) -> Obj | None:
        """The status the provider last derived from its device (``None``: nothing known)."""
        ...

    async def list_workloads(self) -> list[Obj]:
        """The workloads the provider currently delivers (the objects it was given)."""
        ...


@runtime_checkable
class DeviceSource(Protocol):
    """How a provider learns about the Device objects of its gateway."""

    async def upsert_device(self, device: Obj) -> None: ...

    async def delete_device(self, device: Obj) -> None: ...


@runtime_checkable
class NodeProvider(Protocol):
    """What the gateway reports on its Gateway object (the virtual node)."""

    def capacity(self) -> Obj:
        """Resources summed over the devices that are Online (``{"memory": ..., "cpu": ...}``)."""
        ...

    def device_count(self) -> tuple[int, int]:
        """(devices known, devices Online)."""
        ...

    def conditions(self) -> list[Obj]:
        """Extra node conditions from the provider (the gateway adds Ready itself)."""
        ...

    async def ping(self) -> None:
        """Raise if the provider cannot serve devices (its transport is down)."""
        ...


@runtime_checkable
class GatewayProvider(WorkloadProvider, DeviceSource, NodeProvider, Protocol):
    """Everything the upstream (gateway/upstream.py) needs from a provider, and nothing more:
    the three protocols above, the hook it sets to hear that Online devices or capacity
    changed, and :meth:`go_live`. The upstream depends on this, never on a concrete provider."""

    on_node_changed: Callable[[], None]
    # Set by the upstream: whether every Secret/ConfigMap a workload (by uid) references is
    # watched, so that a poll (``refresh_refs()``) can skip it.
    refs_watched: Callable[[str], bool]

    async def refresh_refs(self, uids: Iterable[str] | None = None) -> None:
        """Build these workloads (by uid) again: a Secret or ConfigMap they reference changed.
        ``None``: every workload with references that are not all watched (the fallback poll)."""
        ...

    async def go_live(self, known_uids: set[str] | None = None) -> None:
        """The informers have synced; ``known_uids`` are the Workloads bound right now. Until
        this is called a provider serves what it loaded from its local store unchanged."""
        ...
