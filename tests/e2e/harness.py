"""Real processes for the end-to-end tests: `fleetlet server` (with its scheduler and
controllers), gateways (`python -m fleetlet.gateway.main`), devices created through the API,
MicroPython devices running the real firmware (tests/micropython/fw_harness.Device).
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fleetlet.server.client import ApiClient

from tests.fixtures import ServerProcess, free_tcp_port, free_udp_port
from tests.gateway.harness import coap_answers, eventually

__all__ = ["Fleet", "deployment", "eventually"]

Obj = dict[str, Any]


@dataclass
class Fleet:
    tmp: Path
    fleetlet: str
    port: int = field(default_factory=free_tcp_port)
    server: ServerProcess | None = None
    gateways: dict[str, ServerProcess] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.tmp / "config.yaml"

    @property
    def env(self) -> dict[str, str]:
        return {"FLEETLET_CONFIG": str(self.config_path), "FLEETLET_SERVER": "", "FLEETLET_TOKEN": ""}

    def start_server(self) -> ServerProcess:
        self.server = ServerProcess(
            [
                self.fleetlet,
                "server",
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
        return self.server

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def admin_token(self) -> str:
        return str(yaml.safe_load(self.config_path.read_text())["token"])

    def api(self) -> ApiClient:
        return ApiClient(self.url, self.admin_token, timeout=15)

    async def gateway_token(self, gateway: str) -> str:
        if gateway not in self.tokens:
            async with self.api() as api:
                obj = await api.create(
                    {
                        "apiVersion": "fleetlet.io/v1",
                        "kind": "Token",
                        "metadata": {},
                        "spec": {"role": "gateway", "gateway": gateway},
                    }
                )
            self.tokens[gateway] = str(obj["status"]["token"])
        return self.tokens[gateway]

    def start_gateway(self, name: str, port: int | None = None) -> tuple[ServerProcess, int]:
        """`python -m fleetlet.gateway.main`; its data dir (local store) is kept per name."""
        port = port or free_udp_port()
        proc = ServerProcess(
            [
                sys.executable,
                "-m",
                "fleetlet.gateway.main",
                "--name",
                name,
                "--server",
                self.url,
                "--token",
                self.tokens[name],
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(self.tmp / f"gw-{name}"),
                "--offline-after",
                "6",
                "--status-interval",
                "2",
                "--lease-interval",
                "2",
                "--log-level",
                "debug",
            ],
            extra_env=self.env,
            log_dir=self.tmp / "logs",
            name=f"gateway-{name}",
        )
        proc.start()
        self.gateways[name] = proc
        deadline = time.monotonic() + 30
        while not coap_answers(port):
            if not proc.is_running() or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} did not come up; log:\n{proc.log_tail()}")
            time.sleep(0.05)
        return proc, port

    async def add_device(
        self,
        name: str,
        gateway: str,
        port: int,
        *,
        board: str = "esp32-s3",
        runtimes: tuple[str, ...] = ("micropython",),
        labels: dict[str, str] | None = None,
    ) -> Obj:
        """Create a Device (like `fleetlet device add`) and answer its config."""
        token = "fdc_" + secrets.token_urlsafe(24)
        async with self.api() as api:
            await api.create(
                {
                    "apiVersion": "fleetlet.io/v1",
                    "kind": "Device",
                    "metadata": {"name": name, "labels": labels or {}},
                    "spec": {
                        "gateway": gateway,
                        "board": board,
                        "runtimes": list(runtimes),
                        "credentialHash": hashlib.sha256(token.encode()).hexdigest(),
                    },
                }
            )
        return {
            "device": name,
            "gateway": gateway,
            "host": "127.0.0.1",
            "port": port,
            "token": token,
            "board": board,
        }

    def close(self) -> None:
        for g in self.gateways.values():
            g.stop()
        self.stop_server()


def deployment(
    name: str,
    template_spec: Obj,
    *,
    waves: list[Any] | None = None,
    labels: dict[str, str] | None = None,
    mode: str = "EveryDevice",
    **strategy: Any,
) -> Obj:
    labels = labels or {"app": name}
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "placement": {"mode": mode},
            "strategy": {"waves": waves or ["100%"], **strategy},
            "template": {"metadata": {"labels": labels}, "spec": template_spec},
        },
    }


async def workloads_of(api: ApiClient, deployment_name: str) -> list[Obj]:
    items = (
        await api.list_all("workloads", "default", label_selector=f"fleetlet.io/deployment={deployment_name}")
    )["items"]
    return [w for w in items if not w["metadata"].get("deletionTimestamp")]
