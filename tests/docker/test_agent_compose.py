"""A compose file, converted to a Workload, runs on the agent: services as one workload."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from fleetlet.agent.compose import compose_to_workload
from fleetlet.agent.runtime import LABEL_CONTAINER, LABEL_UID
from fleetlet.agent.spec import from_manifest

from .conftest import AgentFactory, wait_until

pytestmark = pytest.mark.docker


async def test_compose_services_run_as_one_workload(
    make_agent: AgentFactory, busybox_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    shared = tmp_path / "site"
    shared.mkdir()
    (shared / "motd").write_text("from the host\n")
    text = f"""
services:
  api:
    image: {busybox_image}
    command: ["sh", "-c", "echo > /tmp/ok; exec sleep 3600"]
    environment: [GREETING=hi]
    mem_limit: 32m
    cpus: 0.25
    restart: always
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/ok"]
      interval: 1s
      retries: 2
    volumes:
      - {shared}:/site:ro
      - spool:/spool
  worker:
    image: {busybox_image}
    command: sh -c 'echo queued > /spool/job; exec sleep 3600'
    restart: always
    volumes:
      - spool:/spool
volumes:
  spool: {{}}
"""
    manifest = compose_to_workload(text, "stack", namespace="default")
    manifest["metadata"]["uid"] = "c0c0c0c0-0000-4000-8000-000000000001"
    spec = from_manifest(manifest)
    agent = make_agent()
    await agent.apply(spec)
    await wait_until(lambda: agent.reconciler.report(spec.uid).ready, what="both services ready")
    ctrs = {
        c.labels[LABEL_CONTAINER]: c
        for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_UID}={spec.uid}"})
    }
    assert set(ctrs) == {"api", "worker"}
    assert "GREETING=hi" in ctrs["api"].attrs["Config"]["Env"]
    assert ctrs["api"].attrs["HostConfig"]["Memory"] == 32 * 1024 * 1024
    assert ctrs["api"].attrs["HostConfig"]["NanoCpus"] == 250_000_000
    assert agent.reconciler.report(spec.uid).restarts == 0

    # volumes: the bind mount is read-only, the named volume is shared by both services.
    api = ctrs["api"]
    assert api.exec_run(["cat", "/site/motd"]) == (0, b"from the host\n")
    code, _ = api.exec_run(["sh", "-c", "echo x > /site/motd"])
    assert code != 0
    assert (shared / "motd").read_text() == "from the host\n"
    await wait_until(lambda: api.exec_run(["cat", "/spool/job"])[1] == b"queued\n", what="shared volume")
