"""Pull through the gateway's registry mirror: two agents, one upstream fetch per blob.

Everything is real and on loopback: an "upstream" docker-registry with an image pushed to it,
a second docker-registry run by RegistryMirror as a pull-through cache, and the private
dockerd. dockerd treats 127.0.0.0/8 registries as insecure by default, so plain HTTP works.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
import yaml
from fleetlet.agent.runtime import LABEL_UID, DockerRuntime
from fleetlet.gateway.registry_mirror import RegistryMirror

from tests.fixtures.docker import DockerEngine, busybox_rootfs_tar
from tests.fixtures.ports import free_tcp_port, free_udp_port
from tests.fixtures.procs import ServerProcess
from tests.fixtures.require import require

from .conftest import AgentFactory, wait_until, workload

pytestmark = pytest.mark.docker


def _unique_image_tar() -> bytes:
    """busybox plus a random marker file: a layer no other test (or pull) already has."""
    buf = io.BytesIO(busybox_rootfs_tar(require("/bin/busybox", "a tiny image (busybox-static)")))
    with tarfile.open(fileobj=buf, mode="a") as tar:
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("etc/marker")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    return buf.getvalue()


def _start_upstream(tmp_path: Path, port: int) -> ServerProcess:
    binary = require("docker-registry", "a real image registry (Debian package docker-registry)")
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "upstream-data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    cfg = tmp_path / "upstream.yml"
    cfg.write_text(yaml.safe_dump(config))
    proc = ServerProcess([binary, "serve", str(cfg)], log_dir=tmp_path / "logs", name="upstream-registry")
    proc.start(wait_http=f"http://127.0.0.1:{port}/v2/")
    proc.port = port  # type: ignore[attr-defined]
    return proc


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = _start_upstream(tmp_path, free_tcp_port())
    yield proc
    proc.stop()


@pytest.fixture
async def mirror(upstream: ServerProcess, tmp_path: Path) -> AsyncIterator[RegistryMirror]:
    require("docker-registry", "a real image registry (Debian package docker-registry)")
    m = RegistryMirror(
        f"http://127.0.0.1:{upstream.port}",  # type: ignore[attr-defined]
        tmp_path / "mirror",
        listen="127.0.0.1:0",
    )
    await m.start()
    yield m
    await m.stop()


def _blob_gets(log_text: str, repo: str) -> dict[str, int]:
    """Count access-log GETs of each blob of ``repo``."""
    counts: dict[str, int] = {}
    for digest in re.findall(rf'"GET /v2/{re.escape(repo)}/blobs/(sha256:[0-9a-f]{{64}}) HTTP', log_text):
        counts[digest] = counts.get(digest, 0) + 1
    return counts


async def test_second_agent_pulls_from_mirror_without_reaching_upstream(
    make_agent: AgentFactory,
    docker_engine: DockerEngine,
    upstream: ServerProcess,
    mirror: RegistryMirror,
    tmp_path: Path,
) -> None:
    up = f"127.0.0.1:{upstream.port}"  # type: ignore[attr-defined]
    ref = f"{up}/fleetlet/mirrortest:1"
    docker_engine.cli("import", "-", ref, input=_unique_image_tar())
    docker_engine.cli("push", ref)
    docker_engine.cli("rmi", ref)
    assert mirror.upstream_host == up

    cfg = mirror.config_path.read_text()
    assert f"remoteurl: http://{up}" in cfg

    spec = workload("mirrored", [{"name": "m", "image": ref, "command": ["sleep", "3600"]}])
    upstream_after: list[dict[str, int]] = []

    async def one_device(n: int) -> None:
        # Each round is a different device: its own runtime and data dir, and no local image.
        agent = make_agent(
            data_dir=tmp_path / f"agent{n}", registry_mirror=mirror.address, mirror_upstream=up
        )
        rec = agent.reconciler
        await agent.apply(spec)
        await wait_until(lambda: rec.report(spec.uid).state == "Running", what="running")
        image = await agent.runtime.inspect_image(ref)
        assert ref in image["RepoTags"]
        # The mirror's name was only a means to pull: it is not left behind.
        assert not any(t.startswith(mirror.address) for t in image["RepoTags"])
        await agent.apply()
        await wait_until(lambda: not rec.actual, what="removed")
        await agent.stop()
        docker_engine.cli("rmi", ref)
        fetched = _blob_gets(upstream.log_text(), "fleetlet/mirrortest")
        upstream_after.append(fetched)
        # The cache writes blobs to its disk in the background: wait until it holds them all.
        await wait_until(lambda: all(_cached(mirror, d) for d in fetched), what="mirror stored blobs")

    await one_device(1)
    await one_device(2)
    first, second = upstream_after
    mirror_gets = _blob_gets(mirror.log_tail(100_000), "fleetlet/mirrortest")
    assert first, "upstream never served the image"
    # The second device's pull did not reach upstream at all: every blob came from the cache.
    # (distribution 2.8 fetches a blob twice on its first miss: one stream to the client, one
    # to its storage. That is per gateway, not per device.)
    assert second == first, (first, second)
    assert all(count <= 2 for count in first.values()), first
    # ... while the mirror itself served every blob to both devices.
    assert set(mirror_gets) == set(first)
    assert all(count == 2 for count in mirror_gets.values()), mirror_gets


def _cached(mirror: RegistryMirror, digest: str) -> bool:
    algo, _, hexd = digest.partition(":")
    blob = mirror.data_dir / "storage/docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"
    return blob.is_file()


async def test_pull_falls_back_to_registry_when_mirror_is_down(
    make_agent: AgentFactory, docker_engine: DockerEngine, upstream: ServerProcess, tmp_path: Path
) -> None:
    up = f"127.0.0.1:{upstream.port}"  # type: ignore[attr-defined]
    ref = f"{up}/fleetlet/fallback:1"
    docker_engine.cli("import", "-", ref, input=_unique_image_tar())
    docker_engine.cli("push", ref)
    docker_engine.cli("rmi", ref)
    dead_mirror = f"127.0.0.1:{free_tcp_port()}"
    runtime = DockerRuntime(
        docker_engine.host, data_dir=tmp_path / "a", registry_mirror=dead_mirror, mirror_upstream=up
    )
    try:
        await runtime.pull(ref)
        assert ref in (await runtime.inspect_image(ref))["RepoTags"]
    finally:
        runtime.close()
        docker_engine.cli("rmi", ref, check=False)
    assert _blob_gets(upstream.log_text(), "fleetlet/fallback")


def _push_unique(engine: DockerEngine, ref: str) -> None:
    engine.cli("import", "-", ref, input=_unique_image_tar())
    engine.cli("push", ref)
    engine.cli("rmi", ref)


async def test_mirror_waits_for_an_offline_upstream_instead_of_failing(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    """distribution's proxy exits at startup when upstream is down (a gateway booting offline):
    start() must return anyway, and the mirror must come up once upstream answers."""
    require("docker-registry", "a real image registry (Debian package docker-registry)")
    port = free_tcp_port()
    up = f"127.0.0.1:{port}"
    mirror = RegistryMirror(f"http://{up}", tmp_path / "mirror", listen="127.0.0.1:0")
    upstream: ServerProcess | None = None
    runtime = DockerRuntime(
        docker_engine.host, data_dir=tmp_path / "a", registry_mirror=mirror.address, mirror_upstream=up
    )
    ref = f"{up}/fleetlet/late:1"
    try:
        await mirror.start()  # returns although docker-registry could not start
        assert "exited" in mirror.last_error and not mirror.running
        upstream = _start_upstream(tmp_path, port)
        await wait_until(lambda: mirror.running and mirror.last_error == "", what="mirror up", limit=60)
        assert mirror.starts >= 2
        _push_unique(docker_engine, ref)
        await runtime.pull(ref)
        assert ref in (await runtime.inspect_image(ref))["RepoTags"]
        # It came through the mirror (not the direct fallback).
        assert _blob_gets(mirror.log_tail(100_000), "fleetlet/late")
    finally:
        runtime.close()
        docker_engine.cli("rmi", ref, check=False)
        await mirror.stop()
        if upstream is not None:
            upstream.stop()
    assert not mirror.running


async def test_fleetlet_gateway_registry_mirror_flag_serves_agents(
    docker_engine: DockerEngine, upstream: ServerProcess, fleetlet_bin: str, tmp_path: Path
) -> None:
    """The real `fleetlet gateway --registry-mirror UPSTREAM --registry-mirror-listen` runs the
    cache (its API server is unreachable here: the mirror does not depend on it)."""
    up = f"127.0.0.1:{upstream.port}"  # type: ignore[attr-defined]
    listen = f"127.0.0.1:{free_tcp_port()}"
    ref = f"{up}/fleetlet/viagw:1"
    _push_unique(docker_engine, ref)
    gw = ServerProcess(
        [
            fleetlet_bin,
            "gateway",
            "--name",
            "gw-mirror",
            "--server",
            "http://127.0.0.1:9",  # nothing listens: connection refused, on loopback
            "--token",
            "flt_none_none",
            "--listen",
            f"127.0.0.1:{free_udp_port()}",
            "--data-dir",
            str(tmp_path / "gw"),
            "--registry-mirror",
            f"http://{up}",
            "--registry-mirror-listen",
            listen,
        ],
        log_dir=tmp_path / "logs",
        name="gateway",
    )
    runtime = DockerRuntime(
        docker_engine.host, data_dir=tmp_path / "a", registry_mirror=listen, mirror_upstream=up
    )
    try:
        gw.start(wait_http=f"http://{listen}/v2/")
        await runtime.pull(ref)
        assert ref in (await runtime.inspect_image(ref))["RepoTags"]
        mirror_log = (tmp_path / "gw" / "registry-mirror" / "registry.log").read_text()
        assert _blob_gets(mirror_log, "fleetlet/viagw"), "the pull did not go through the gateway's mirror"
        assert gw.is_running()
    finally:
        runtime.close()
        docker_engine.cli("rmi", ref, check=False)
        gw.stop()


async def test_agent_without_mirror_flag_pulls_through_the_mirror_its_gateway_offers(
    docker_engine: DockerEngine,
    docker_host: str,
    upstream: ServerProcess,
    fleetlet_bin: str,
    tmp_path: Path,
) -> None:
    """Server, `fleetlet gateway --registry-mirror`, and `fleetlet agent` with no mirror setting:
    the gateway's registration answer names its mirror (registered key 4) and the agent pulls
    the workload's image through it, which the mirror's log and catalog show."""
    from tests.e2e.harness import Fleet, deployment

    up = f"127.0.0.1:{upstream.port}"  # type: ignore[attr-defined]
    ref = f"{up}/fleetlet/offered:1"
    _push_unique(docker_engine, ref)
    mirror_listen = f"127.0.0.1:{free_tcp_port()}"
    coap = free_udp_port()
    fleet = Fleet(tmp_path, fleetlet_bin)
    agent: ServerProcess | None = None
    try:
        fleet.start_server()
        token = await fleet.gateway_token("gw-offer")
        gw = ServerProcess(
            [
                fleetlet_bin,
                "gateway",
                "--name",
                "gw-offer",
                "--server",
                fleet.url,
                "--token",
                token,
                "--listen",
                f"127.0.0.1:{coap}",
                "--data-dir",
                str(tmp_path / "gw"),
                "--registry-mirror",
                f"http://{up}",
                "--registry-mirror-listen",
                mirror_listen,
            ],
            extra_env=fleet.env,
            log_dir=tmp_path / "logs",
            name="gateway",
        )
        fleet.gateways["gw-offer"] = gw  # fleet.close() stops it
        gw.start(wait_http=f"http://{mirror_listen}/v2/")  # the mirror starts after CoAP
        dev = await fleet.add_device("sbc-1", "gw-offer", coap, board="raspberry-pi-4", runtimes=("docker",))
        (tmp_path / "token").write_text(dev["token"])
        agent = ServerProcess(
            [
                fleetlet_bin,
                "agent",
                "--device",
                "sbc-1",
                "--gateway",
                f"coap://127.0.0.1:{coap}",
                "--token-file",
                str(tmp_path / "token"),
                "--docker-host",
                docker_host,
                "--data-dir",
                str(tmp_path / "sbc-1"),
            ],
            log_dir=tmp_path / "logs",
            name="agent",
        ).start()
        async with fleet.api() as api:
            await api.create(
                deployment(
                    "offered",
                    {
                        "runtime": "docker",
                        "restartPolicy": "Always",
                        "containers": [{"name": "main", "image": ref, "command": ["sleep", "3600"]}],
                    },
                )
            )
        client = docker.APIClient(base_url=docker_host, timeout=60)
        try:

            def running() -> bool:
                return any(c["Image"] == ref for c in client.containers(filters={"label": LABEL_UID}))

            await wait_until(running, limit=120, what="the workload's container running")
            assert ref in client.inspect_image(ref)["RepoTags"]
        finally:
            client.close()
        mirror_log = (tmp_path / "gw" / "registry-mirror" / "registry.log").read_text()
        assert _blob_gets(mirror_log, "fleetlet/offered"), "the pull did not go through the gateway's mirror"
        assert f"through registry mirror {mirror_listen}" in agent.log_text()
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(f"http://{mirror_listen}/v2/_catalog", timeout=10) as resp:
            assert "fleetlet/offered" in json.load(resp)["repositories"]
    finally:
        if agent is not None:
            agent.stop()
        fleet.close()
        docker_engine.cli("rmi", ref, check=False)
