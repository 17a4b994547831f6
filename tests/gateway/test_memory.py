"""What the gateway keeps per device and per workload stays small and bounded (issue #7: 1,000
devices in <= 40 MB): what each cache holds, not timings."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from fleetlet.gateway.coap_endpoint import EXCHANGE_LIFETIME
from fleetlet.gateway.coap_provider import CoapDeviceProvider, DocView
from fleetlet.gateway.coap_server import GatewaySite, start_server
from fleetlet.gateway.devices import DeviceState
from fleetlet.gateway.localstore import LocalStore
from fleetlet.gateway.status_sync import StatusSync, object_key
from fleetlet.gateway.wire import Report

from tests.fixtures import free_udp_port
from tests.gateway.test_units import Refs, Writer


def workload(name: str, device: str, modules: list[dict[str, Any]], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": "7",
            "labels": {"app": "x"},
            "ownerReferences": [{"kind": "Deployment", "name": "x", "uid": "d"}],
        },
        "spec": {
            "runtime": "micropython",
            "deviceName": device,
            "gatewayName": "gw",
            "app": {"entry": "main", "modules": modules},
        },
        "status": {"phase": "Pending"},
    }


async def provider(tmp_path: Path) -> tuple[CoapDeviceProvider, LocalStore, Writer]:
    store = await LocalStore.open(tmp_path / "g.db")
    writer = Writer()  # stands for the API and its informers' caches
    p = CoapDeviceProvider(store, StatusSync(writer, None), Refs())
    await p.go_live(set())
    return p, store, writer


async def test_provider_keeps_whole_workloads_only_when_they_read_references(tmp_path: Path) -> None:
    p, store, writer = await provider(tmp_path)
    try:
        inline = workload("a", "d1", [{"name": "main.py", "source": "print(1)\n"}])
        refs = workload("b", "d2", [{"name": "main.py", "configMapRef": {"name": "code", "key": "lib.py"}}])
        await p.create_workload(inline)
        await p.create_workload(refs)
        kept = {o["metadata"]["name"]: o for o in await p.list_workloads()}
        assert kept["a"] == {  # no spec, no status: the informer's cache has the status
            "metadata": {"name": "a", "namespace": "default", "uid": "uid-a", "resourceVersion": "7"},
            "spec": {"deviceName": "d1", "gatewayName": "gw"},
        }
        assert kept["b"] is refs  # refresh_refs translates it again from the whole object
        assert p.desired("d1").gen == 1 and p.desired("d2").gen == 1
        # A status-only update keeps the entry; the status comes from the informer's cache.
        writer.server[object_key("workloads", "default", "a")] = {"phase": "Running", "reason": "x"}
        await p.update_workload({**inline, "status": {"phase": "Running", "reason": "x"}})
        assert (await p.get_workload_status("default", "a")) == {"phase": "Running", "reason": "x"}
        assert "app" not in (await p.list_workloads())[0].get("spec", {})
        assert p.desired("d1").gen == 1
    finally:
        await store.close()


async def test_status_sync_forgets_what_the_server_shows() -> None:
    writer = Writer()
    sync = StatusSync(writer, None)
    key = object_key("devices", None, "d1")
    conditions = [{"type": "Ready", "status": "True", "reason": "DeviceReporting"}]
    sync.update(key, {"phase": "Online", "conditions": conditions}, {"lastSeen": "t1"})
    await sync.flush(force=True)
    assert sync.last_known(key) == {"phase": "Online", "conditions": conditions, "lastSeen": "t1"}
    # The Writer's server dict plays the informer: it shows the write, so nothing is kept twice.
    sync.update(key, {"phase": "Online"})
    await sync.flush()
    assert sync._entries[key].written == {} and writer.calls[-1][1]["phase"] == "Online"
    assert {**writer.server[key], **sync.last_known(key)} == writer.server[key]
    # While the informer lags behind a write, the gateway keeps its own copy (and does not
    # write the same again).
    writer.server[key] = {"phase": "Offline"}
    sync.update(key, {"phase": "Online"})
    await sync.flush()
    writer.server[key] = {"phase": "Offline"}  # the watch event of that write is still on its way
    sync.update(key, {"phase": "Online"})
    n = len(writer.calls)
    await sync.flush()
    assert sync._entries[key].written == {"phase": "Online"} and len(writer.calls) == n
    assert sync.last_known(key)["phase"] == "Online"


class CountingBackend:
    """The CoAP resources' backend with one registered device; counts what reaches it."""

    def __init__(self) -> None:
        self.device = DeviceState("dev1", "0" * 64)
        self.device.host = "127.0.0.1"
        self.reports = 0

    async def register(self, ep: str, hello: Any, host: str) -> Any:
        raise AssertionError("not used")

    def authorize(self, ep: str, host: str) -> Any:
        return self.device

    def desired(self, ep: str) -> DocView:
        return DocView(0, b"e", b"")

    def touch(self, d: DeviceState) -> None:
        pass

    async def blob(self, sha256: bytes) -> bytes | None:
        return None

    def report(self, d: DeviceState, report: Report) -> None:
        self.reports += 1

    def logs(self, d: DeviceState, batch: Any) -> None:
        pass


def con_post(mid: int, path: tuple[str, ...], payload: bytes) -> bytes:
    """A confirmable CoAP POST (RFC 7252 framing) with a 2-byte token and Uri-Path options."""
    out = bytearray((0x42, 0x02, mid >> 8, mid & 0xFF, 0xA1, 0xB2))
    last = 0
    for seg in path:
        data = seg.encode()
        assert len(data) < 13
        out.append(((11 - last) << 4) | len(data))
        out += data
        last = 11
    return bytes(out + b"\xff" + payload)


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


async def test_duplicates_are_answered_from_the_cache_within_the_shorter_window() -> None:
    assert 45 < EXCHANGE_LIFETIME < 60  # covers a device's last retransmission (45 s), not 247 s
    backend = CountingBackend()
    port = free_udp_port()
    endpoint = await start_server(GatewaySite(backend), "127.0.0.1", port)
    try:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(Peer, remote_addr=("127.0.0.1", port))
        try:
            report = con_post(0x1234, ("d", "dev1", "report"), Report(gen=1).to_cbor())
            answers = []
            for _ in range(3):  # the first copy and two retransmissions
                transport.sendto(report)
                answers.append(await asyncio.wait_for(peer.got.get(), 10))
            assert answers[0][1] == 0x44 and answers[0][2:4] == b"\x12\x34"  # 2.04, piggybacked
            assert answers[1] == answers[0] == answers[2]
            assert backend.reports == 1  # processed once
            transport.sendto(con_post(0x1235, ("d", "dev1", "report"), Report(gen=2).to_cbor()))
            await asyncio.wait_for(peer.got.get(), 10)
            assert backend.reports == 2  # a new message ID is a new request
            # What a remembered request costs: its key and the encoded answer (a few bytes).
            assert endpoint.remembered() == 2
            assert all(isinstance(v, bytes) and len(v) < 16 for v in endpoint._recent.values())
        finally:
            transport.close()
    finally:
        with contextlib.suppress(Exception):
            await endpoint.shutdown()


async def test_an_observation_is_one_small_record() -> None:
    """Per observer: one slotted record (peer, token, block size, a message ID), no task, no
    copy of the request; the document is rendered when it changes."""
    import sys

    from fleetlet.gateway.coap_server import Observation

    backend = CountingBackend()
    port = free_udp_port()
    site = GatewaySite(backend)
    endpoint = await start_server(site, "127.0.0.1", port)
    try:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(Peer, remote_addr=("127.0.0.1", port))
        try:
            tasks = len(asyncio.all_tasks())
            get = bytes((0x42, 0x01, 0x00, 0x07, 0xA1, 0xB2, 0x60))  # CON GET, token, Observe: 0
            get += bytes((0x51,)) + b"d" + bytes((0x04,)) + b"dev1" + bytes((0x07,)) + b"desired"
            transport.sendto(get)
            await asyncio.wait_for(peer.got.get(), 10)
            (watchers,) = site.devices._observers.values()
            (obs,) = watchers.values()
            assert isinstance(obs, Observation) and not hasattr(obs, "__dict__")
            assert sys.getsizeof(obs) < 100 and len(asyncio.all_tasks()) == tasks
        finally:
            transport.close()
    finally:
        await endpoint.shutdown()


async def test_store_uses_one_thread_and_a_small_page_cache(tmp_path: Path) -> None:
    import threading

    store = await LocalStore.open(tmp_path / "g.db")
    try:
        assert await store._run(lambda: store._conn.execute("PRAGMA cache_size").fetchone()[0]) == -512
        threads = await asyncio.gather(*(store._run(threading.get_ident) for _ in range(20)))
        assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
        await asyncio.gather(*(store.put_device(f"d{i}", "0" * 64) for i in range(50)))
        assert len(await store.load_devices()) == 50
    finally:
        await store.close()
