"""The controller manager: every controller in one process, behind leader election.

``fleetlet server`` runs it in-process and ``fleetlet controllers`` standalone; both call
:func:`run_controllers`. With several managers against one API, only the holder of the
``fleetlet-system/fleetlet-controller-manager`` Lease runs controllers; the others wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from fleetlet.server.client import ApiClient, SharedInformers

from .base import Controller
from .deployment import DeploymentController
from .events import EventRecorder
from .gc import GarbageCollector
from .namespace import NamespaceController
from .nodelifecycle import LifecycleOptions, NodeLifecycleController

log = logging.getLogger(__name__)

ALL_CONTROLLERS = ("deployment", "nodelifecycle", "garbagecollector", "namespace")
LEASE_NAME = "fleetlet-controller-manager"


@dataclass
class ControllerOptions:
    controllers: tuple[str, ...] = ALL_CONTROLLERS
    workers: int = 2
    lifecycle: LifecycleOptions = field(default_factory=LifecycleOptions)
    leader_elect: bool = True
    lease_namespace: str = "fleetlet-system"
    lease_duration: float = 15.0
    identity: str | None = None
    event_burst: int = 10
    event_refill_seconds: float = 30.0
    namespace_retry_period: float = 1.0


class ControllerManager:
    def __init__(
        self,
        client: ApiClient,
        options: ControllerOptions | None = None,
        informers: SharedInformers | None = None,
    ):
        self.client = client
        self.informers = informers
        self.options = options or ControllerOptions()
        unknown = set(self.options.controllers) - set(ALL_CONTROLLERS)
        if unknown:
            raise ValueError(
                f"unknown controllers: {', '.join(sorted(unknown))}; known: {', '.join(ALL_CONTROLLERS)}"
            )
        self.controllers: list[Controller] = []
        self.leading = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    def build(self) -> list[Controller]:
        """Fresh controllers (new caches and queues) for one term of leadership."""
        o = self.options
        recorder = EventRecorder(
            self.client,
            "fleetlet-controller-manager",
            burst=o.event_burst,
            refill_seconds=o.event_refill_seconds,
        )
        made: list[Controller] = []
        shared = self.informers
        for name in o.controllers:
            if name == "deployment":
                made.append(DeploymentController(self.client, recorder, workers=o.workers, informers=shared))
            elif name == "nodelifecycle":
                made.append(NodeLifecycleController(self.client, recorder, o.lifecycle, informers=shared))
            elif name == "garbagecollector":
                made.append(GarbageCollector(self.client, workers=o.workers, informers=shared))
            elif name == "namespace":
                made.append(
                    NamespaceController(
                        self.client, recorder, retry_period=o.namespace_retry_period, informers=shared
                    )
                )
        return made

    def get(self, name: str) -> Controller | None:
        return next((c for c in self.controllers if c.name == name), None)

    async def wait_synced(self) -> None:
        await self.leading.wait()
        for c in list(self.controllers):
            await c.wait_synced()

    async def _run_all(self) -> None:
        self.controllers = self.build()
        log.info("starting controllers: %s", ", ".join(c.name for c in self.controllers))
        self.leading.set()
        try:
            await asyncio.gather(*(c.run() for c in self.controllers))
        finally:
            self.leading.clear()

    async def run(self) -> None:
        """Run until cancelled."""
        if not self.options.leader_elect:
            await self._run_all()
            return
        from fleetlet.server.leaderelection import LeaderElector

        async def started() -> None:
            self._running = asyncio.create_task(self._run_all(), name="controllers")

        async def stopped() -> None:
            await self._stop_running()

        elector = LeaderElector(
            self.client,
            name=LEASE_NAME,
            namespace=self.options.lease_namespace,
            identity=self.options.identity,
            lease_duration=self.options.lease_duration,
            on_started_leading=started,
            on_stopped_leading=stopped,
        )
        try:
            await elector.run()
        finally:
            await self._stop_running()

    async def _stop_running(self) -> None:
        task, self._running = self._running, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def run_controllers(
    client: ApiClient, options: ControllerOptions | None = None, informers: SharedInformers | None = None
) -> None:
    """Run every controller (with leader election unless disabled) until cancelled. With
    ``informers`` (a running :class:`SharedInformers`) they share its watches and caches."""
    await ControllerManager(client, options, informers).run()
