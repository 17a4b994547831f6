"""The shared fixtures start real components that answer (see tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import ServerProcess, free_tcp_port, free_udp_port, port_open, wait_for_port
from tests.fixtures.docker import DockerEngine
from tests.fixtures.etcd import etcd_get, etcd_post, etcd_put


@pytest.mark.postgres
def test_postgres_url_runs_select_1(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    assert postgres_url.startswith("postgresql+psycopg://")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            version = conn.execute(text("SHOW server_version")).scalar_one()
            assert str(version).startswith("15")
            # Bound to loopback only.
            assert conn.execute(text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_db_url_is_a_fresh_database(postgres_url: str, postgres_db_url: str) -> None:
    from sqlalchemy import create_engine, text

    assert postgres_db_url != postgres_url
    engine = create_engine(postgres_db_url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
            assert tables == 0
            conn.execute(text("CREATE TABLE t (x int)"))
            conn.execute(text("INSERT INTO t VALUES (42)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalar_one() == 42
    finally:
        engine.dispose()


def test_etcd_put_and_get_through_json_gateway(etcd_endpoint: str) -> None:
    assert etcd_endpoint.startswith("http://127.0.0.1:")
    put = etcd_put(etcd_endpoint, "/fleetlet/smoke", "hello ✓")
    assert int(put["header"]["revision"]) >= 2
    assert etcd_get(etcd_endpoint, "/fleetlet/smoke") == "hello ✓".encode()
    assert etcd_get(etcd_endpoint, "/fleetlet/absent") is None
    # The raw answer really is base64 on the wire.
    raw = etcd_post(etcd_endpoint, "/v3/kv/range", {"key": "L2ZsZWV0bGV0L3Ntb2tl"})
    assert raw["kvs"][0]["key"] == "L2ZsZWV0bGV0L3Ntb2tl"


def test_server_process_waits_logs_and_stops(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc = ServerProcess(
        [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log_dir=tmp_path,
        cwd=tmp_path,
    )
    with proc:
        proc.start(wait_http=f"http://127.0.0.1:{port}/", expect_status=200)
        assert proc.is_running()
        assert port_open(port)
        assert "Serving HTTP" in proc.log_text()
    assert not proc.is_running()
    assert proc.returncode is not None


def test_server_process_reports_early_exit(tmp_path: Path) -> None:
    proc = ServerProcess(
        [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"], log_dir=tmp_path
    )
    with pytest.raises(RuntimeError, match="boom: bad config"):
        proc.start(wait_port=free_tcp_port(), timeout=30)
    assert proc.returncode == 3


def test_server_process_kill_signal(tmp_path: Path) -> None:
    import signal

    port = free_tcp_port()
    proc = ServerProcess(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], log_dir=tmp_path
    )
    proc.start(wait_port=port)
    proc.kill(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stop()


def test_free_ports_are_bindable_and_wait_for_port_times_out() -> None:
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
    with pytest.raises(TimeoutError):
        wait_for_port(free_tcp_port(), timeout=0.2)


@pytest.mark.micropython
def test_micropython_bin_runs(micropython_bin: str) -> None:
    out = subprocess.run(
        [micropython_bin, "-c", "import sys; print(sys.implementation.name)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "micropython"


def test_coap_client_bin_exists(coap_client_bin: str) -> None:
    assert os.access(coap_client_bin, os.X_OK)
    out = subprocess.run([coap_client_bin], capture_output=True, text=True, timeout=30, check=False)
    assert "coap-client" in (out.stdout + out.stderr)


@pytest.mark.docker
def test_docker_runs_busybox_container_without_network(
    docker_engine: DockerEngine, busybox_image: str
) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_engine.host)
    try:
        output = client.containers.run(
            busybox_image,
            ["sh", "-c", "echo hi-from-busybox; ls /sys/class/net"],
            network_mode="none",
            remove=True,
        )
        lines = output.decode().split()
        assert "hi-from-busybox" in lines
        # network none: only the loopback interface exists inside.
        assert lines[1:] == ["lo"]
    finally:
        client.close()
