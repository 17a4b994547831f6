"""Harness for the SBC agent tests against the real (private) Docker Engine.

``make_agent()`` builds a DockerRuntime + Reconciler with short backoffs and runs the loop as
a task; ``agent.stop()`` cancels it the way a SIGTERM would (containers stay). Every test
ends by removing the fleetlet containers it left, so tests sharing the session engine
never see each other's workloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from fleetlet.agent.reconciler import Backoff, Reconciler
from fleetlet.agent.runtime import LABEL_UID, DockerRuntime
from fleetlet.agent.spec import WorkloadSpec, from_manifest
from fleetlet.agent.state import AgentState

FAST_BACKOFF = Backoff(initial=0.3, maximum=2.0, reset_after=60.0)


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], limit: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; the timeout only bounds a broken run (no timing asserts)."""
    deadline = time.monotonic() + limit
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def workload(
    name: str,
    containers: list[dict[str, Any]],
    *,
    uid: str | None = None,
    generation: int = 1,
    restart_policy: str = "Always",
    volumes: list[dict[str, Any]] | None = None,
    secrets: dict[str, dict[str, bytes]] | None = None,
) -> WorkloadSpec:
    manifest = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid or str(uuid.uuid4()),
            "generation": generation,
        },
        "spec": {
            "runtime": "docker",
            "restartPolicy": restart_policy,
            "containers": containers,
            "volumes": volumes or [],
        },
    }
    return from_manifest(manifest, secrets=secrets)


@dataclass
class Agent:
    runtime: DockerRuntime
    reconciler: Reconciler
    data_dir: Path
    task: asyncio.Task[None] | None = None
    changes: list[float] = field(default_factory=list)

    def start(self) -> Agent:
        self.task = asyncio.create_task(self.reconciler.run(), name="test agent")
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        self.runtime.close()

    async def apply(self, *specs: WorkloadSpec) -> None:
        self.reconciler.set_desired(list(specs))
        await self.reconciler.wait_pass(1)


AgentFactory = Callable[..., Agent]


@pytest.fixture
def docker_client(docker_host: str) -> docker.DockerClient:
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield client
    client.close()


@pytest.fixture
async def make_agent(docker_host: str, tmp_path: Path) -> AsyncIterator[AgentFactory]:
    agents: list[Agent] = []

    def factory(
        *,
        data_dir: Path | None = None,
        backoff: Backoff = FAST_BACKOFF,
        resync: float = 0.2,
        host: str | None = None,
        **runtime_kwargs: Any,
    ) -> Agent:
        ddir = data_dir or tmp_path / "agent"
        runtime_kwargs.setdefault("stop_timeout", 1)
        runtime = DockerRuntime(host or docker_host, data_dir=ddir, **runtime_kwargs)
        state = AgentState.load(ddir / "state.json")
        rec = Reconciler(
            runtime,
            state,
            backoff=backoff,
            resync=resync,
            engine_retry=Backoff(initial=0.2, maximum=1.0),
            stats_interval=0.3,
        )
        agent = Agent(runtime, rec, ddir)
        rec.on_change = lambda: agent.changes.append(time.monotonic())
        agents.append(agent)
        return agent.start()

    yield factory
    for agent in agents:
        await agent.stop()


@pytest.fixture(autouse=True)
def _remove_fleetlet_containers(request: pytest.FixtureRequest) -> Any:
    yield
    if "docker_host" not in request.fixturenames:
        return
    host = request.getfixturevalue("docker_host")
    client = docker.APIClient(base_url=host, timeout=60)
    try:
        for c in client.containers(all=True, filters={"label": LABEL_UID}):
            with contextlib.suppress(docker.errors.NotFound):
                client.remove_container(c["Id"], force=True)
    finally:
        client.close()
