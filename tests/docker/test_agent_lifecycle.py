"""Deploy, update and remove a two-container workload on a real Docker Engine."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import docker
import pytest
from fleetlet.agent.reconciler import Backoff
from fleetlet.agent.runtime import (
    LABEL_CONTAINER,
    LABEL_GENERATION,
    LABEL_SPEC_HASH,
    LABEL_UID,
)

from .conftest import AgentFactory, wait_until, workload

pytestmark = pytest.mark.docker


def _containers(client: docker.DockerClient, uid: str) -> list[docker.models.containers.Container]:
    # ignore_removed: the agent may remove one between the SDK's list and its inspect.
    filters = {"label": f"{LABEL_UID}={uid}"}
    return list(client.containers.list(all=True, filters=filters, ignore_removed=True))


def _pair(busybox_image: str, *, generation: int, env_value: str) -> list[dict[str, object]]:
    return [
        {
            "name": "web",
            "image": busybox_image,
            "command": ["sh", "-c", "echo hello from web; exec sleep 3600"],
            "env": [{"name": "MODE", "value": env_value}],
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
        },
        {
            "name": "sidecar",
            "image": busybox_image,
            "command": ["sleep", "3600"],
        },
    ]


async def test_deploy_update_remove_two_containers(
    make_agent: AgentFactory, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    agent = make_agent()
    uid = "11111111-aaaa-4bbb-8ccc-000000000001"
    v1 = workload("shop", _pair(busybox_image, generation=1, env_value="one"), uid=uid, generation=1)
    await agent.apply(v1)

    await wait_until(lambda: agent.reconciler.report(uid).state == "Running", what="v1 running")
    ctrs = {c.labels[LABEL_CONTAINER]: c for c in _containers(docker_client, uid)}
    assert set(ctrs) == {"web", "sidecar"}
    web = ctrs["web"]
    assert web.name == f"fleetlet_shop_web_{uid[:8]}"
    assert web.labels[LABEL_GENERATION] == "1"
    assert web.labels[LABEL_SPEC_HASH] == v1.spec_hash()
    assert "MODE=one" in web.attrs["Config"]["Env"]
    assert web.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert web.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert web.attrs["HostConfig"]["NetworkMode"] == "host"
    assert web.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    v1_ids = {c.id for c in ctrs.values()}

    logs = await agent.runtime.logs(uid, "web", tail=10)
    assert [e.text for e in logs] == ["hello from web"]
    assert logs[0].stream == 0

    # A changed env in one container replaces both: the workload is updated as a unit.
    v2 = workload("shop", _pair(busybox_image, generation=2, env_value="two"), uid=uid, generation=2)
    assert v2.spec_hash() != v1.spec_hash()
    await agent.apply(v2)
    await wait_until(
        lambda: (
            {c.id for c in _containers(docker_client, uid)}.isdisjoint(v1_ids)
            and agent.reconciler.report(uid).state == "Running"
        ),
        what="v2 replaces both containers",
    )
    ctrs2 = {c.labels[LABEL_CONTAINER]: c for c in _containers(docker_client, uid)}
    assert set(ctrs2) == {"web", "sidecar"}
    assert all(c.labels[LABEL_GENERATION] == "2" for c in ctrs2.values())
    assert "MODE=two" in ctrs2["web"].attrs["Config"]["Env"]
    report = agent.reconciler.report(uid)
    assert report.generation == 2 and report.restarts == 0 and report.ready

    # Usage is sampled per container.
    await wait_until(
        lambda: all(c.memory_bytes is not None for c in agent.reconciler.report(uid).containers),
        what="memory samples",
    )
    await wait_until(
        lambda: all(c.cpu_percent is not None for c in agent.reconciler.report(uid).containers),
        what="cpu samples",
    )

    # Removed from the desired state: both containers go, and only ours.
    other = docker_client.containers.run(busybox_image, ["sleep", "3600"], network_mode="none", detach=True)
    try:
        await agent.apply()
        await wait_until(lambda: not _containers(docker_client, uid), what="workload removed")
        other.reload()
        assert other.status == "running"
    finally:
        other.remove(force=True)


async def test_secrets_as_files_and_env(
    make_agent: AgentFactory, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    agent = make_agent()
    secrets = {"db": {"password": b"s3cret!", "user": b"admin"}}
    spec = workload(
        "vault",
        [
            {
                "name": "app",
                "image": busybox_image,
                "command": ["sleep", "3600"],
                "env": [{"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}],
                "volumeMounts": [{"name": "creds", "mountPath": "/run/secrets/db"}],
            }
        ],
        volumes=[{"name": "creds", "secret": {"secretName": "db"}}],
        secrets=secrets,
    )
    await agent.apply(spec)
    await wait_until(lambda: agent.reconciler.report(spec.uid).state == "Running", what="running")
    (ctr,) = _containers(docker_client, spec.uid)
    assert "DB_USER=admin" in ctr.attrs["Config"]["Env"]
    code, out = ctr.exec_run(["cat", "/run/secrets/db/password"])
    assert (code, out) == (0, b"s3cret!")
    # Mounted read-only, so the workload cannot alter its secret.
    code, _ = ctr.exec_run(["sh", "-c", "echo x > /run/secrets/db/password"])
    assert code != 0
    host_dir = Path(next(m["Source"] for m in ctr.attrs["Mounts"] if m["Destination"] == "/run/secrets/db"))
    assert host_dir.is_relative_to(agent.data_dir)
    assert stat.S_IMODE(os.stat(host_dir / "password").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(host_dir).st_mode) == 0o700
    # The secret value never appears in labels (only a digest feeds the spec hash).
    assert all("s3cret" not in v for v in ctr.labels.values())

    await agent.apply()
    await wait_until(lambda: not _containers(docker_client, spec.uid), what="removed")
    # delete_workload removes the containers first, then the workload's folder with its secrets.
    await wait_until(lambda: not host_dir.exists(), what="the secret folder removed")
    assert not await asyncio.to_thread(host_dir.exists)


async def test_containers_start_together_or_not_at_all(
    make_agent: AgentFactory, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    from tests.fixtures.ports import free_tcp_port

    # A long pull backoff: the fixed spec below must not wait it out (a new spec retries at once).
    agent = make_agent(backoff=Backoff(initial=600.0, maximum=600.0))
    uid = "11111111-aaaa-4bbb-8ccc-000000000002"
    # The second image cannot be pulled (nothing listens on that loopback port): the first
    # container must not start alone.
    missing = f"127.0.0.1:{free_tcp_port()}/fleetlet/missing:1"
    pair = [
        {"name": "web", "image": busybox_image, "command": ["sleep", "3600"]},
        {"name": "side", "image": missing, "command": ["sleep", "3600"]},
    ]
    await agent.apply(workload("duo", pair, uid=uid, generation=1))
    await wait_until(
        lambda: agent.reconciler.report(uid).reason in ("ErrImagePull", "ImagePullBackOff"),
        what="pull failure reported",
    )
    await agent.reconciler.wait_pass(3)
    assert _containers(docker_client, uid) == []
    report = agent.reconciler.report(uid)
    assert report.state == "Waiting" and not report.ready
    assert missing in report.message
    assert int(report.to_wire().state) == 1  # WorkloadState.FETCHING

    # Fixed in generation 2: both start.
    pair[1]["image"] = busybox_image
    await agent.apply(workload("duo", pair, uid=uid, generation=2))
    await wait_until(lambda: agent.reconciler.report(uid).state == "Running", what="both running")
    assert {c.labels[LABEL_CONTAINER] for c in _containers(docker_client, uid)} == {"web", "side"}
