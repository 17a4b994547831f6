"""Real processes for the gateway tests: a `fleetlet server`, `fleetlet gateway`s, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from fleetlet.server.client import ApiClient

from tests.fixtures import ServerProcess, free_tcp_port, free_udp_port

T = TypeVar("T")

# CON GET /.well-known/core, message id 0x1234, no token.
_WKC_GET = bytes([0x40, 0x01, 0x12, 0x34, 0xBB]) + b".well-known" + bytes([0x04]) + b"core"


def coap_answers(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(_WKC_GET, ("127.0.0.1", port))
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
    return len(data) >= 4 and data[2:4] == b"\x12\x34"


@dataclass
class Cluster:
    tmp: Path
    fleetlet: str
    port: int = field(default_factory=free_tcp_port)
    server: ServerProcess | None = None
    gateways: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"FLEETLET_CONFIG": str(self.tmp / "config.yaml"), "FLEETLET_SERVER": "", "FLEETLET_TOKEN": ""}

    def start_server(self) -> None:
        self.server = ServerProcess(
            [
                self.fleetlet,
                "server",
                "--no-scheduler",  # tests bind workloads themselves
                "--data-dir",
                str(self.tmp / "server"),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            extra_env=self.env,
            log_dir=self.tmp / "logs",
            name="fleetlet-server",
        )
        self.server.start(wait_http=f"{self.url}/healthz", timeout=60)
        deadline = time.monotonic() + 30
        while not (self.tmp / "config.yaml").exists():
            assert time.monotonic() < deadline, "the server wrote no CLI config"
            time.sleep(0.05)

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.stop()
        self.server = None

    @property
    def admin_token(self) -> str:
        return str(yaml.safe_load((self.tmp / "config.yaml").read_text())["token"])

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [self.fleetlet, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **self.env}
        )
        assert proc.returncode == 0, f"fleetlet {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def gateway_token(self, gateway: str) -> str:
        return self.cli("token", "create", "--role", "gateway", "--gateway", gateway).strip()

    def add_device(self, name: str, gateway: str, board: str = "esp32-s3") -> dict[str, Any]:
        out = self.tmp / f"{name}.json"
        self.cli("device", "add", name, "--gateway", gateway, "--board", board, "-o", str(out))
        assert (out.stat().st_mode & 0o777) == 0o600
        config: dict[str, Any] = json.loads(out.read_text())
        return config

    def start_gateway(
        self, name: str, token: str, coap_port: int | None = None, *extra: str, data_dir: Path | None = None
    ) -> tuple[ServerProcess, int]:
        port = coap_port or free_udp_port()
        proc = ServerProcess(
            [
                self.fleetlet,
                "gateway",
                "--name",
                name,
                "--server",
                self.url,
                "--token",
                token,
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data_dir or self.tmp / f"gw-{name}"),
                "--offline-after",
                "3",
                "--status-interval",
                "2",
                "--lease-interval",
                "1",
                "--log-level",
                "debug",
                *extra,
            ],
            extra_env=self.env,
            log_dir=self.tmp / "logs",
            name=f"gateway-{name}",
        )
        proc.start()
        self.gateways.append(proc)
        deadline = time.monotonic() + 30
        while not coap_answers(port):
            if not proc.is_running() or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not come up; log:\n{proc.log_tail()}")
            time.sleep(0.05)
        return proc, port

    def api(self) -> ApiClient:
        return ApiClient(self.url, self.admin_token, timeout=10)

    def close(self) -> None:
        for g in self.gateways:
            g.stop()
        if self.server is not None:
            self.server.stop()


async def eventually(fn: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:  # noqa: ASYNC109
    """Poll ``fn`` until it answers something truthy (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except Exception as e:
            last = e
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def micropython_workload(
    name: str, source: str = "async def main(ctx):\n    pass\n", **app: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtime": "micropython",
            "app": {"entry": "main", "modules": [{"name": "main.py", "source": source}], **app},
        },
    }


@contextlib.contextmanager
def running_cluster(tmp: Path, fleetlet_bin: str) -> Iterator[Cluster]:
    """A Cluster with its server started, closed (server and gateways) on exit."""
    c = Cluster(tmp, fleetlet_bin)
    try:
        c.start_server()
        yield c
    finally:
        c.close()
