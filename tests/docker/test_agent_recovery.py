"""Agent restarts adopt running containers; dockerd restarts lose nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest
from fleetlet.agent.runtime import LABEL_CONTAINER, LABEL_UID

from tests.fixtures.docker import DockerEngine
from tests.fixtures.require import require, unavailable

from .conftest import AgentFactory, wait_until, workload

pytestmark = pytest.mark.docker


def _by_uid(client: docker.DockerClient, uid: str) -> list[docker.models.containers.Container]:
    # ignore_removed: the agent may remove one between the SDK's list and its inspect.
    filters = {"label": f"{LABEL_UID}={uid}"}
    return list(client.containers.list(all=True, filters=filters, ignore_removed=True))


async def test_agent_restart_adopts_containers_without_restarting_them(
    make_agent: AgentFactory, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    steady = workload(
        "steady",
        [
            {"name": "a", "image": busybox_image, "command": ["sleep", "3600"]},
            {"name": "b", "image": busybox_image, "command": ["sleep", "3600"]},
        ],
    )
    crashy = workload("crashy", [{"name": "c", "image": busybox_image, "command": ["sh", "-c", "exit 7"]}])
    gone = workload("gone", [{"name": "g", "image": busybox_image, "command": ["sleep", "3600"]}])
    first = make_agent()
    await first.apply(steady, crashy, gone)
    await wait_until(lambda: first.reconciler.report(steady.uid).state == "Running", what="steady running")
    await wait_until(lambda: first.reconciler.report(crashy.uid).restarts >= 2, what="crashy restarts")
    before = {c.id: c.attrs["State"]["StartedAt"] for c in _by_uid(docker_client, steady.uid)}
    assert len(before) == 2
    await first.stop()
    restarts_before = first.reconciler.state.workloads[crashy.uid].containers["c"].restarts
    saved = json.loads((first.data_dir / "state.json").read_text())
    assert saved["workloads"][crashy.uid]["containers"]["c"]["restarts"] == restarts_before

    # A new agent process (same data dir). Its desired state arrives later, over CoAP: until
    # then it must leave every container alone (an empty "desired" only means "not heard yet").
    second = make_agent(data_dir=first.data_dir)
    await second.reconciler.wait_pass(3)
    waiting = {c.id: c.attrs["State"]["StartedAt"] for c in _by_uid(docker_client, steady.uid)}
    assert waiting == before
    assert _by_uid(docker_client, gone.uid), "removed before the desired state was known"
    assert _by_uid(docker_client, crashy.uid)
    # The desired state arrives and no longer has "gone".
    await second.apply(steady, crashy)
    await second.reconciler.wait_pass(3)
    after = {c.id: c.attrs["State"]["StartedAt"] for c in _by_uid(docker_client, steady.uid)}
    assert after == before  # same container ids, never restarted
    assert second.reconciler.report(steady.uid).restarts == 0
    assert second.reconciler.report(steady.uid).state == "Running"
    assert second.reconciler.report(crashy.uid).restarts >= restarts_before
    assert second.reconciler.report(crashy.uid).exit_code == 7
    await wait_until(lambda: not _by_uid(docker_client, gone.uid), what="undesired workload removed")


@pytest.fixture
def private_engine() -> Iterator[DockerEngine]:
    """A dockerd of this test's own, so restarting it disturbs no other test."""
    import os

    dockerd = require("dockerd", "restarting a Docker Engine (Debian package docker.io)")
    busybox = require("/bin/busybox", "a tiny container image (Debian package busybox-static)")
    if os.geteuid() != 0:
        unavailable("dockerd needs root")
    engine = DockerEngine(dockerd)
    try:
        engine.start()
        engine.import_busybox("fleetlet-test/busybox:latest", busybox)
    except Exception as exc:
        engine.stop()
        unavailable(f"private dockerd failed to start: {exc}")
    yield engine
    engine.stop()


async def test_dockerd_restart_keeps_counts_and_creates_no_duplicates(
    make_agent: AgentFactory, private_engine: DockerEngine
) -> None:
    image = "fleetlet-test/busybox:latest"
    agent = make_agent(host=private_engine.host)
    steady = workload("steady", [{"name": "s", "image": image, "command": ["sleep", "3600"]}])
    crashy = workload("crashy", [{"name": "c", "image": image, "command": ["sh", "-c", "exit 3"]}])
    await agent.apply(steady, crashy)
    await wait_until(lambda: agent.reconciler.report(steady.uid).state == "Running", what="steady running")
    await wait_until(lambda: agent.reconciler.report(crashy.uid).restarts >= 2, what="crash loop")
    crashy_before = agent.reconciler.report(crashy.uid).restarts
    passes_before = agent.reconciler.passes

    assert private_engine.proc is not None
    private_engine.proc.stop(timeout=30)  # SIGTERM, as systemd would on `restart docker`
    private_engine.proc = None
    await wait_until(lambda: agent.reconciler.engine_error != "", what="agent notices the outage")
    assert agent.reconciler.report(crashy.uid).restarts >= crashy_before  # nothing forgotten
    private_engine.start()

    # A full pass after the outage, not just the cached picture from before it.
    await wait_until(
        lambda: agent.reconciler.engine_error == "" and agent.reconciler.passes > passes_before,
        what="agent reconnects",
        limit=60,
    )
    await wait_until(lambda: agent.reconciler.report(steady.uid).state == "Running", what="steady back")
    assert agent.reconciler.report(crashy.uid).restarts >= crashy_before
    assert agent.reconciler.report(crashy.uid).exit_code == 3
    await agent.reconciler.wait_pass(3)

    client = docker.DockerClient(base_url=private_engine.host, timeout=60)
    try:
        for spec in (steady, crashy):
            names = [c.labels[LABEL_CONTAINER] for c in _by_uid(client, spec.uid)]
            assert len(names) == len(set(names)) == 1, f"duplicates for {spec.name}: {names}"
        (s,) = _by_uid(client, steady.uid)
        assert s.status == "running"
    finally:
        client.close()
    # dockerd stopped the steady container; the agent restarted it and counted it.
    assert agent.reconciler.report(steady.uid).restarts == 1
    saved = json.loads((agent.data_dir / "state.json").read_text())
    assert saved["workloads"][crashy.uid]["containers"]["c"]["restarts"] >= crashy_before
