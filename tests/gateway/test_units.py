"""Unit tests: translation, the local store, status coalescing, the device table."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from fleetlet.gateway.devices import DeviceTable, Refusal, credential_hash
from fleetlet.gateway.localstore import LocalStore, StoredDoc
from fleetlet.gateway.status_sync import StatusSync, object_key
from fleetlet.gateway.translate import (
    TranslateError,
    content_hash,
    encode_doc,
    sort_entries,
    translate_workload,
)
from fleetlet.gateway.wire import DesiredDoc, DockerWorkload, MicroPythonWorkload, RestartPolicy


class Refs:
    def __init__(self) -> None:
        self.secrets: dict[str, Any] = {
            "default/creds": {"data": {"password": base64.b64encode(b"s3cret").decode()}},
        }
        self.configmaps: dict[str, Any] = {"default/code": {"data": {"lib.py": "X = 1\n", "level": "debug"}}}
        self.reads = 0

    async def secret(self, namespace: str, name: str) -> Any:
        self.reads += 1
        return self.secrets.get(f"{namespace}/{name}")

    async def configmap(self, namespace: str, name: str) -> Any:
        self.reads += 1
        return self.configmaps.get(f"{namespace}/{name}")


def _wl(spec: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    meta = {"name": "app", "namespace": "default", "uid": "u-1", "generation": generation}
    return {"metadata": meta, "spec": spec}


async def test_micropython_modules_become_blobs() -> None:
    spec = {
        "runtime": "micropython",
        "restartPolicy": "OnFailure",
        "app": {
            "entry": "main",
            "modules": [
                {"name": "main.py", "source": "import lib\n"},
                {"name": "lib.py", "configMapRef": {"name": "code", "key": "lib.py"}},
            ],
            "config": {"interval": 5, "nested": {"a": 1}},
            "secrets": ["creds"],
        },
    }
    t = await translate_workload(_wl(spec), Refs())
    doc = DesiredDoc.from_cbor(encode_doc(7, [t.entry]))
    w = doc.workloads[0]
    assert isinstance(w, MicroPythonWorkload)
    assert (w.uid, w.name, w.generation, w.restart_policy) == (
        "u-1",
        "default/app",
        3,
        RestartPolicy.ON_FAILURE,
    )
    assert [m.name for m in w.modules] == ["main.py", "lib.py"]
    for m, data in zip(w.modules, (b"import lib\n", b"X = 1\n"), strict=True):
        assert m.sha256 == hashlib.sha256(data).digest() and m.size == len(data)
        assert t.blobs[m.sha256] == data
    assert dict(w.config) == {"interval": 5, "nested": '{"a": 1}'}
    assert dict(w.secrets) == {"password": b"s3cret"}
    assert t.refs == {"configmap:default/code", "secret:default/creds"}


async def test_docker_env_resolved_and_probes() -> None:
    spec = {
        "runtime": "docker",
        "containers": [
            {
                "name": "web",
                "image": "nginx:1",
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "L", "valueFrom": {"configMapKeyRef": {"name": "code", "key": "level"}}},
                    {
                        "name": "O",
                        "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}},
                    },
                ],
                "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "readinessProbe": {"httpGet": {"path": "/ok", "port": "http"}, "periodSeconds": 5},
            }
        ],
    }
    t = await translate_workload(_wl(spec), Refs())
    w = DesiredDoc.from_cbor(encode_doc(1, [t.entry])).workloads[0]
    assert isinstance(w, DockerWorkload)
    c = w.containers[0]
    assert dict(c.env) == {"A": "1", "P": "s3cret", "L": "debug"}
    assert c.ports[0].host == 8080 and c.resources is not None and c.resources.memory == 64 * 2**20
    assert c.resources.cpu == 500
    assert c.readiness is not None and c.readiness.http_get is not None and c.readiness.http_get.port == 80
    assert c.readiness.period == 5


async def test_missing_reference_is_a_translate_error() -> None:
    spec = {
        "runtime": "micropython",
        "app": {"modules": [{"name": "m.py", "configMapRef": {"name": "x", "key": "k"}}]},
    }
    with pytest.raises(TranslateError) as e:
        await translate_workload(_wl(spec), Refs())
    assert e.value.reason == "ConfigMapNotFound"


async def test_content_hash_ignores_order_and_gen() -> None:
    refs = Refs()
    a = (
        await translate_workload(
            _wl({"runtime": "micropython", "app": {"modules": [{"name": "a", "source": "1"}]}}), refs
        )
    ).entry
    b = {**a, 1: "u-2", 2: "default/b"}
    assert content_hash(sort_entries([a, b])) == content_hash(sort_entries([b, a]))
    assert encode_doc(1, sort_entries([a, b])) != encode_doc(2, sort_entries([a, b]))
    a2 = {**a, 3: 4}  # a new Workload generation
    assert content_hash(sort_entries([a2, b])) != content_hash(sort_entries([a, b]))


async def test_localstore_roundtrip(tmp_path: Path) -> None:
    store = await LocalStore.open(tmp_path / "g.db")
    await store.put_doc(StoredDoc("d1", 3, b"e" * 8, b"h" * 32, b"doc"))
    await store.put_blobs({b"1" * 32: b"one", b"2" * 32: b"two"})
    await store.put_device("d1", "ab" * 32)
    await store.save_pending({"workloads/ns/a": {"restarts": 1}})
    await store.save_pending({"workloads/ns/a": {"restarts": 2}, "devices//d1": {"phase": "Online"}})
    await store.queue_event({"reason": "X"})
    await store.close()

    store = await LocalStore.open(tmp_path / "g.db")
    assert await store.load_docs() == [StoredDoc("d1", 3, b"e" * 8, b"h" * 32, b"doc")]
    assert await store.get_blob(b"2" * 32) == b"two"
    assert await store.gc_blobs({b"2" * 32}) == 1 and await store.get_blob(b"1" * 32) is None
    assert await store.load_devices() == {"d1": "ab" * 32}
    assert await store.load_pending() == {
        "workloads/ns/a": {"restarts": 2},
        "devices//d1": {"phase": "Online"},
    }
    await store.save_pending({}, ["workloads/ns/a"])
    assert list(await store.load_pending()) == ["devices//d1"]
    events = await store.take_events()
    assert [b for _, b in events] == [{"reason": "X"}]
    await store.delete_device("d1")
    assert await store.load_docs() == [] and await store.load_devices() == {}
    await store.close()


class Writer:
    def __init__(self) -> None:
        self.server: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    async def patch_status(
        self, plural: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        if self.down:
            from fleetlet.server.client import ConnectionFailed

            raise ConnectionFailed("http://x", "connection refused")
        key = object_key(plural, namespace, name)
        self.calls.append((key, dict(status)))
        self.server.setdefault(key, {}).update(status)

    def current_status(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.server.get(object_key(plural, namespace, name))


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_status_coalesces_and_skips_unchanged(tmp_path: Path) -> None:
    w, clock = Writer(), Clock()
    sync = StatusSync(w, None, volatile_interval=10, clock=clock)
    key = object_key("workloads", "ns", "a")
    for i in range(50):
        sync.update(key, {"phase": "Running", "restarts": i})
    await sync.flush()
    assert w.calls == [(key, {"phase": "Running", "restarts": 49})]
    for _ in range(10):
        sync.update(key, {"phase": "Running", "restarts": 49})
        await sync.flush()
    assert len(w.calls) == 1  # nothing changed: no write

    dkey = object_key("devices", None, "d")
    sync.update(dkey, {"phase": "Online"}, {"lastSeen": "t0"})
    await sync.flush()
    for i in range(20):  # volatile only: held back until the interval passes
        sync.update(dkey, None, {"lastSeen": f"t{i + 1}", "freeMemory": i})
        clock.t += 0.1
        await sync.flush()
    assert [c for c in w.calls if c[0] == dkey] == [(dkey, {"phase": "Online", "lastSeen": "t0"})]
    clock.t += 10
    await sync.flush()
    assert w.calls[-1] == (dkey, {"lastSeen": "t20", "freeMemory": 19})


async def test_status_kept_offline_and_latest_wins_across_restart(tmp_path: Path) -> None:
    w = Writer()
    store = await LocalStore.open(tmp_path / "g.db")
    sync = StatusSync(w, store, persist_interval=0)
    key = object_key("workloads", "ns", "a")
    w.down = True
    for i in range(5):
        sync.update(key, {"restarts": i})
        await sync.flush()
    assert not sync.online and w.calls == []
    await store.close()

    store = await LocalStore.open(tmp_path / "g.db")  # a gateway restart
    sync2 = StatusSync(w, store)
    await sync2.load()
    w.down = False
    await sync2.flush()
    assert w.calls == [(key, {"restarts": 4})]
    assert await store.load_pending() == {}
    await store.close()


def test_device_table_registration_and_liveness() -> None:
    clock = Clock()
    table = DeviceTable(lifetime=60, offline_after=30, clock=clock)
    table.upsert("d", credential_hash("tok"))
    assert isinstance(table.register("x", b"tok", "h"), Refusal)
    bad = table.register("d", b"nope", "h")
    assert isinstance(bad, Refusal) and bad.code == "UNAUTHORIZED"
    missing = table.register("d", None, "h")
    assert isinstance(missing, Refusal) and missing.code == "UNAUTHORIZED"
    d = table.register("d", b"tok", "h")
    assert not isinstance(d, Refusal)
    assert table.authorize("d", "h") is d
    other = table.authorize("d", "elsewhere")
    assert isinstance(other, Refusal) and other.code == "FORBIDDEN"
    assert table.seen(d) and not table.seen(d)
    clock.t += 31
    assert table.sweep() == [d] and table.sweep() == []
    clock.t += 60
    expired = table.authorize("d", "h")
    assert isinstance(expired, Refusal) and expired.code == "UNAUTHORIZED"
    assert table.upsert("d", credential_hash("new"))  # a new credential voids the registration


async def test_status_changed_while_its_write_is_in_flight_is_written_next() -> None:
    """A registration that lands while the previous patch of the same device is on its way
    (a server that just came back answers slowly) must not be lost when that write succeeds."""
    import asyncio

    class SlowWriter(Writer):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def patch_status(
            self, plural: str, namespace: str | None, name: str, status: dict[str, Any]
        ) -> None:
            await self.gate.wait()
            await super().patch_status(plural, namespace, name, status)

    w = SlowWriter()
    sync = StatusSync(w, None, volatile_interval=0)
    key = object_key("devices", None, "d")
    sync.update(key, {"phase": "Online", "bootCount": 1}, {"lastSeen": "t1"})
    first = asyncio.create_task(sync.flush())
    await asyncio.sleep(0.01)  # the write is in flight
    sync.update(key, {"bootCount": 2}, {"lastSeen": "t2"})
    w.gate.set()
    assert await first == 1
    assert w.server[key] == {"phase": "Online", "bootCount": 1, "lastSeen": "t1"}
    assert sync.pending_count() == 1  # the newer fields wait for the next tick
    await sync.flush()
    assert w.server[key] == {"phase": "Online", "bootCount": 2, "lastSeen": "t2"}
    assert w.calls[-1] == (key, {"bootCount": 2, "lastSeen": "t2"})
    assert sync.pending_count() == 0
