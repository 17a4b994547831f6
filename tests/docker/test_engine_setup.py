"""The Docker test setup itself: a private bridge-less dockerd, images built from busybox-static,
and a missing engine failing the run under CI=true instead of skipping it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import pytest

from tests.fixtures.docker import DockerEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.docker
def test_private_engine_runs_without_bridge_or_iptables(
    docker_engine: DockerEngine, docker_client: docker.DockerClient
) -> None:
    assert docker_engine.proc is not None
    pid = docker_engine.proc.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert "--bridge=none" in argv and "--iptables=false" in argv
    # No default bridge network exists, so nothing can end up on one.
    assert "bridge" not in {n.name for n in docker_client.networks.list()}


@pytest.mark.docker
def test_test_image_is_built_locally_from_busybox_static(
    busybox_image: str, docker_client: docker.DockerClient
) -> None:
    image = docker_client.images.get(busybox_image)
    # Imported from a tar, never pulled: no registry digest, one layer.
    assert image.attrs["RepoDigests"] == []
    assert len(image.attrs["RootFS"]["Layers"]) == 1
    out = docker_client.containers.run(
        busybox_image, ["busybox", "sha256sum", "/bin/busybox"], network_mode="none", remove=True
    )
    host = hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest()
    assert out.decode().split()[0] == host


def _run_engine_test(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    """Run a one-test session that needs the engine, with no dockerd on PATH."""
    test = tmp_path / "test_needs_engine.py"
    test.write_text(
        textwrap.dedent(
            """
            def test_needs_engine(docker_host):
                assert docker_host
            """
        )
    )
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(CI=ci, PATH=str(empty), PYTHONPATH=str(REPO))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "-rs",
            str(test),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )


def test_missing_engine_fails_in_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    ci = _run_engine_test(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "REQUIRED COMPONENT UNAVAILABLE IN CI" in ci.stdout and "dockerd" in ci.stdout, ci.stdout
    local = _run_engine_test(tmp_path, "false")
    assert local.returncode == 0, local.stdout + local.stderr
    assert "1 skipped" in local.stdout and "dockerd" in local.stdout, local.stdout
