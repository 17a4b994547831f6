"""Image GC removes unused images oldest first until usage is below the low threshold."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest
from fleetlet.agent.imagegc import ImageGC
from fleetlet.agent.runtime import DockerRuntime

from tests.fixtures.docker import DockerEngine, busybox_rootfs_tar
from tests.fixtures.require import require

from .conftest import AgentFactory, wait_until, workload

pytestmark = pytest.mark.docker


def _import_unique(engine: DockerEngine, tag: str) -> str:
    buf = io.BytesIO(busybox_rootfs_tar(require("/bin/busybox", "a tiny image (busybox-static)")))
    with tarfile.open(fileobj=buf, mode="a") as tar:
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("etc/marker")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    engine.cli("import", "-", tag, input=buf.getvalue())
    return engine.cli("image", "inspect", "-f", "{{.Id}}", tag).stdout.decode().strip()


async def test_image_gc_removes_unused_oldest_first_down_to_low_threshold(
    make_agent: AgentFactory, docker_engine: DockerEngine, busybox_image: str, tmp_path: Path
) -> None:
    runtime = DockerRuntime(docker_engine.host, data_dir=tmp_path / "gc")
    # Everything already in the engine belongs to other tests: protect it.
    before = {i["Id"] for i in await runtime.list_images()}
    old1 = _import_unique(docker_engine, "fleetlet-gc/old1:1")
    old2 = _import_unique(docker_engine, "fleetlet-gc/old2:1")
    newest = _import_unique(docker_engine, "fleetlet-gc/newest:1")
    used = _import_unique(docker_engine, "fleetlet-gc/used:1")
    desired = _import_unique(docker_engine, "fleetlet-gc/desired:1")

    agent = make_agent()
    spec = workload("gcuser", [{"name": "c", "image": "fleetlet-gc/used:1", "command": ["sleep", "3600"]}])
    await agent.apply(spec)
    await wait_until(lambda: agent.reconciler.report(spec.uid).state == "Running", what="running")

    sizes = {i["Id"]: int(i["Size"]) for i in await runtime.list_images()}
    total = sum(sizes.values())
    # Above high; low sits just under "total minus the two oldest", so exactly those two must go.
    gc = ImageGC(
        runtime,
        measure="images",
        high=total - 1,
        low=total - sizes[old1] - sizes[old2] + 1,
        protected=lambda: [*before, "fleetlet-gc/desired:1", busybox_image],
    )
    try:
        result = await gc.collect()
        assert result.removed == (old1, old2)
        assert result.usage_before == total
        assert result.usage_after <= gc.low
        left = {i["Id"] for i in await runtime.list_images()}
        assert {newest, used, desired} <= left
        assert old1 not in left and old2 not in left
        assert before <= left

        # Below the high threshold nothing happens.
        idle = ImageGC(runtime, measure="images", high=float(total), low=0.0)
        assert (await idle.collect()).removed == ()
        assert newest in {i["Id"] for i in await runtime.list_images()}
    finally:
        await agent.apply()
        for tag in ("newest", "used", "desired"):
            docker_engine.cli("rmi", "-f", f"fleetlet-gc/{tag}:1", check=False)
        runtime.close()


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="low threshold"):
        ImageGC(DockerRuntime("unix:///nonexistent"), high=10, low=20)
