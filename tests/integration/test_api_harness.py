"""An in-process API server for the API tests (aiohttp TestServer over a store on a temp SQLite
file), plus sanity tests of the harness itself. Test modules build their fixtures with
``start_api``; a module named test_* keeps this importable without a conftest of its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from fleetlet.server.api import create_app
from fleetlet.server.api.app import ApiRunner
from fleetlet.server.auth import ensure_admin
from fleetlet.server.store import Store


@dataclass
class Reply:
    status: int
    body: Any
    text: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else ""


@dataclass
class Api:
    client: TestClient[Any, Any]
    store: Store
    admin: str
    data_dir: Path

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "admin",
        raw: bytes | str | None = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        headers: dict[str, str] = {}
        tok = self.admin if token == "admin" else token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        data: bytes | str | None = raw
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        resp = await self.client.request(method, path, data=data, headers=headers, params=params)
        text = await resp.text()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(resp.status, parsed, text, dict(resp.headers))

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        r = await self.call(method, path, body, **kw)
        assert r.status < 300, f"{method} {path} -> {r.status}: {r.text}"
        return r.body

    async def token(self, role: str, **spec: Any) -> str:
        body = {"metadata": {"generateName": f"{role}-"}, "spec": {"role": role, **spec}}
        created = await self.ok("POST", "/api/v1/tokens", body)
        return str(created["status"]["token"])

    async def watch_lines(
        self, path: str, params: dict[str, str], *, token: str | None = "admin"
    ) -> list[Any]:
        """Read a watch stream to its end (the test sets timeoutSeconds or expects an ERROR)."""
        r = await self.call("GET", path, params={"watch": "true", **params}, token=token)
        assert r.status == 200, r.text
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]


class ApiTestServer(TestServer):
    """A TestServer that serves like `fleetlet server` does: through ApiRunner's fast path."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ApiRunner(self.app, **kwargs)


@asynccontextmanager
async def start_api(tmp_path: Path, **app_kwargs: Any) -> AsyncIterator[Api]:
    store = await Store.open(f"sqlite:///{tmp_path}/fleetlet.db", compaction_interval=0)
    try:
        app = create_app(store, **app_kwargs)
        async with TestClient(ApiTestServer(app)) as client:
            admin = await ensure_admin(
                store, tmp_path / "data", "http://test", tmp_path / "cfg" / "config.yaml"
            )
            yield Api(client, store, admin, tmp_path / "data")
    finally:
        await store.close()


def workload(name: str, image: str = "nginx:1.27", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"runtime": "docker", "containers": [{"name": "main", "image": image}], **spec},
    }


def device(name: str, gateway: str = "gw1", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"gateway": gateway, **spec}}


# -- sanity tests of the harness ------------------------------------------------------------
async def test_harness_serves_healthz_and_system_namespaces(tmp_path: Path) -> None:
    async with start_api(tmp_path) as api:
        r = await api.call("GET", "/healthz", token=None)
        assert (r.status, r.text) == (200, "ok")
        names = [n["metadata"]["name"] for n in (await api.ok("GET", "/api/v1/namespaces"))["items"]]
        assert names == ["default", "fleetlet-node-lease", "fleetlet-system"]
