"""Hollow devices: many simulated devices per process speaking the real wire protocol.

In the style of kubemark's hollow nodes and edgemark: the gateway side is real, the device
side is as thin as it can be while doing what a device does on the wire. Each device has its
own UDP socket (the gateway authorizes by endpoint and address), registers (POST /rd), observes
its desired document (GET /d/<ep>/desired, Observe, Block2), fetches the blobs it lacks
(GET /b/<sha256>, Block2), and reports every workload Running (POST /d/<ep>/report) promptly
after each new document and periodically after that. Nothing is executed.

CoAP is a raw asyncio DatagramProtocol with the small RFC 7252 codec below (the firmware's
coap.py is tuned for MicroPython and changes under its own constraints); messages are the
gateway's codec (fleetlet.gateway.wire).
At 1,000 devices that costs a few MB and a few % of one core, where one aiocoap context per
device costs ~100 kB and a task set each.

    python bench/hollow.py --devices devices.json [--report-interval 20]
      devices.json: [{"name": ..., "token": ..., "host": "127.0.0.1", "port": 5683}, ...]
      prints "hollow: N registered, M running" lines; SIGTERM/SIGINT stops it.

    async with HollowFleet(specs) as fleet:      # in-process, e.g. from a test
        await fleet.wait(lambda d: d.running_gen > 0)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetlet.gateway import coap
from fleetlet.gateway.coap import Code
from fleetlet.gateway.wire import (
    DesiredDoc,
    Hello,
    MicroPythonWorkload,
    Report,
    Runtime,
    WireError,
    WorkloadState,
    WorkloadStatus,
)

__all__ = ["DeviceSpec", "HollowDevice", "HollowFleet"]

CBOR = 60
CREATED, CHANGED = 0x41, 0x44
GONE = (0x81, 0x83, 0x84)  # 4.01, 4.03, 4.04: the gateway does not know us (any more)
SZX = 6  # 1024-byte blocks


# CoAP: the gateway's own codec (gateway/coap.py), the same bytes a device puts on the wire.


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    token: str
    port: int
    host: str = "127.0.0.1"
    runtime: str = "micropython"


class CoapFailed(Exception):
    pass


class HollowDevice(asyncio.DatagramProtocol):
    def __init__(self, spec: DeviceSpec, *, report_interval: float = 20.0, fetch_blobs: bool = True) -> None:
        self.spec = spec
        self.report_interval = report_interval
        self.fetch_blobs = fetch_blobs
        self.transport: asyncio.DatagramTransport | None = None
        self.mid = random.randrange(0x10000)
        self.waiting: dict[bytes, asyncio.Future[Any]] = {}  # token -> response
        self.by_mid: dict[int, bytes] = {}  # mid of an outstanding CON -> token
        self.obs_token = b""
        self.obs_seq = -1
        self.doc_event = asyncio.Event()
        self.doc_payload: bytes | None = None
        self.etag: bytes | None = None
        self.blobs: set[bytes] = set()
        self.registered = False
        self.running_gen = 0  # gen of the last document reported Running
        self.running_at = 0.0  # time.time() of that report
        self.reports = 0
        self.errors = 0
        self.started = time.monotonic()
        self.boot_count = 1

    # -- transport -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            m = coap.decode(data)
        except ValueError:
            return
        if m.mtype == coap.CON:
            self._send(coap.encode(coap.ACK, 0, m.mid))
        if m.mtype == coap.ACK or m.mtype == coap.RST:
            token = self.by_mid.pop(m.mid, None)
            if m.mtype == coap.RST and token is not None:
                fut = self.waiting.pop(token, None)
                if fut is not None and not fut.done():
                    fut.set_exception(CoapFailed("reset"))
                return
            if m.code == 0:
                return  # empty ACK: a separate response follows
        if m.code == 0:
            return
        fut = self.waiting.pop(m.token, None)
        if fut is not None and not fut.done():
            fut.set_result(m)
        elif self.obs_token and m.token == self.obs_token and m.observe is not None:
            self._notified(m)

    def error_received(self, exc: Exception) -> None:
        self.errors += 1

    def _send(self, buf: bytes | bytearray) -> None:
        if self.transport is not None:
            self.transport.sendto(bytes(buf))

    def _next_mid(self) -> int:
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    async def request(
        self,
        code: int,
        path: str,
        payload: bytes = b"",
        opts: Iterable[tuple[int, bytes]] = (),
        token: bytes = b"",
    ) -> Any:
        """One confirmable exchange (RFC 7252 retransmission: 2 s x1..1.5, doubling, 4 retries)."""
        token = token or os.urandom(4)
        mid = self._next_mid()
        options = [*coap.split_uri(path), *opts]
        if payload:
            options.append((coap.CONTENT_FORMAT, coap.uint(CBOR)))
        buf = coap.encode(coap.CON, code, mid, token, options, payload)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[token] = fut
        self.by_mid[mid] = token
        timeout = 2.0 * random.uniform(1.0, 1.5)
        try:
            for _ in range(5):
                self._send(buf)
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(fut), timeout)
                timeout *= 2
            raise CoapFailed(f"{path}: no answer")
        finally:
            self.waiting.pop(token, None)
            self.by_mid.pop(mid, None)

    async def get_blockwise(self, path: str, first: Any, extra: Iterable[tuple[int, bytes]] = ()) -> bytes:
        """The whole body of a Block2 response whose first block is ``first``."""
        body = bytearray(first.payload)
        block = first.block2
        while block is not None and block[1]:
            num = block[0] + 1
            resp = await self.request(
                Code.GET, path, opts=[*extra, (coap.BLOCK2, coap.Block(num, False, block[2]).encode())]
            )
            if not coap.is_success(resp.code):
                raise CoapFailed(f"{path} block {num}: {coap.code_str(resp.code)}")
            body += resp.payload
            block = resp.block2
        return bytes(body)

    # -- the device ------------------------------------------------------------------------
    def hello(self) -> bytes:
        runtime = Runtime.DOCKER if self.spec.runtime == "docker" else Runtime.MICROPYTHON
        return Hello(
            board="esp32-s3" if runtime == Runtime.MICROPYTHON else "raspberry-pi-4",
            firmware="hollow-0.1",
            arch="xtensawin" if runtime == Runtime.MICROPYTHON else "arm64",
            runtimes=(runtime,),
            mem_free=120_000,
            boot_count=self.boot_count,
            token=self.spec.token.encode(),
        ).to_cbor()

    async def register(self) -> None:
        delay = 1.0
        while True:
            try:
                resp = await self.request(Code.POST, f"/rd?ep={self.spec.name}", self.hello())
                if resp.code == CREATED:
                    self.registered = True
                    return
            except CoapFailed:
                pass
            self.errors += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)

    async def observe(self, *, same_token: bool = False) -> None:
        """Register an observation (a new token per registration; re-registering keeps it)."""
        path = f"/d/{self.spec.name}/desired"
        if not (same_token and self.obs_token):
            self.obs_token = os.urandom(4)
            self.obs_seq = -1
        resp = await self.request(Code.GET, path, opts=[(coap.OBSERVE, b"")], token=self.obs_token)
        if resp.code in GONE:
            self.registered = False
            return
        if coap.is_success(resp.code):
            await self._take(resp, path)

    async def poll(self) -> None:
        """ETag check of the document (2.03 Valid when nothing changed), as a freshness check
        of the observation: on a change (a missed notification, a restarted gateway), observe again."""
        path = f"/d/{self.spec.name}/desired"
        opts = [(coap.ETAG, self.etag)] if self.etag else []
        resp = await self.request(Code.GET, path, opts=opts)
        if resp.code in GONE:
            self.registered = False
        elif resp.code != Code.VALID and coap.is_success(resp.code):
            await self.observe(same_token=True)

    def _notified(self, m: Any) -> None:
        seq = m.observe
        if self.obs_seq >= 0 and not (0 < (seq - self.obs_seq) & 0xFFFFFF < 0x800000):
            return
        self.obs_seq = seq
        asyncio.get_running_loop().create_task(self._take(m, f"/d/{self.spec.name}/desired"))

    async def _take(self, m: Any, path: str) -> None:
        if m.code == Code.VALID:
            return
        try:
            payload = await self.get_blockwise(path, m) if m.block2 is not None else bytes(m.payload)
        except CoapFailed:
            self.errors += 1
            return
        self.etag = m.etag
        self.doc_payload = payload
        self.doc_event.set()

    async def apply(self, payload: bytes) -> Report:
        doc = DesiredDoc.from_cbor(payload)
        for w in doc.workloads:
            if self.fetch_blobs and isinstance(w, MicroPythonWorkload):
                for ref in w.modules:
                    if ref.sha256 not in self.blobs:
                        await self.fetch_blob(ref.sha256)
        statuses = tuple(WorkloadStatus(w.uid, w.generation, WorkloadState.RUNNING) for w in doc.workloads)
        self._last = Report(gen=doc.gen, workloads=statuses, heap_free=100_000, uptime=self.uptime())
        return self._last

    async def fetch_blob(self, sha: bytes) -> None:
        path = f"/b/{sha.hex()}"
        first = await self.request(Code.GET, path)
        if not coap.is_success(first.code):
            raise CoapFailed(f"{path}: {coap.code_str(first.code)}")
        data = await self.get_blockwise(path, first) if first.block2 is not None else bytes(first.payload)
        if hashlib.sha256(data).digest() != sha:
            raise CoapFailed(f"{path}: sha256 mismatch")
        self.blobs.add(sha)

    def uptime(self) -> int:
        return int(time.monotonic() - self.started)

    async def report(self, rep: Report) -> bool:
        rep = Report(gen=rep.gen, workloads=rep.workloads, heap_free=rep.heap_free, uptime=self.uptime())
        resp = await self.request(Code.POST, f"/d/{self.spec.name}/report", rep.to_cbor())
        if resp.code in GONE:
            self.registered = False
            return False
        self.reports += 1
        return bool(resp.code == CHANGED)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, remote_addr=(self.spec.host, self.spec.port))
        self._last: Report | None = None
        try:
            while True:
                try:
                    if not self.registered:
                        await self.register()
                        await self.observe()
                        if not self.registered:
                            continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.doc_event.wait(), self.report_interval * random.uniform(0.8, 1.2)
                        )
                    if self.doc_event.is_set():
                        self.doc_event.clear()
                        payload = self.doc_payload
                        assert payload is not None
                        rep = await self.apply(payload)
                        if await self.report(rep):
                            self.running_gen = rep.gen
                            self.running_at = time.time()
                    else:
                        if self._last is not None:
                            await self.report(self._last)
                        await self.poll()
                except (CoapFailed, WireError) as e:
                    self.errors += 1
                    if isinstance(e, CoapFailed):
                        self.registered = False  # start over: register, observe
                    await asyncio.sleep(random.uniform(0.5, 2.0))
        finally:
            if self.transport is not None:
                self.transport.close()


class HollowFleet:
    """Many hollow devices in this process (one task and one socket each)."""

    def __init__(
        self, specs: Iterable[DeviceSpec], *, report_interval: float = 20.0, ramp: float = 0.002
    ) -> None:
        self.devices = [HollowDevice(s, report_interval=report_interval) for s in specs]
        self.ramp = ramp  # seconds between device starts: no thundering herd at boot
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        raise_nofile(len(self.devices) + 256)
        for d in self.devices:
            self.tasks.append(asyncio.create_task(d.run(), name=f"hollow-{d.spec.name}"))
            await asyncio.sleep(self.ramp)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def __aenter__(self) -> HollowFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self, pred: Callable[[HollowDevice], bool], timeout: float = 60.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not all(pred(d) for d in self.devices):
            if time.monotonic() > deadline:
                left = [d.spec.name for d in self.devices if not pred(d)]
                raise TimeoutError(f"{len(left)} hollow devices not there yet: {left[:5]}")
            await asyncio.sleep(0.1)

    def counts(self) -> tuple[int, int]:
        return sum(d.registered for d in self.devices), sum(d.running_gen > 0 for d in self.devices)


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))


async def _main(args: argparse.Namespace) -> None:
    specs = [DeviceSpec(**d) for d in json.loads(Path(args.devices).read_text())]  # noqa: ASYNC240
    fleet = HollowFleet(specs, report_interval=args.report_interval)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    last = (-1, -1)
    try:
        await fleet.start()
        while True:
            now = fleet.counts()
            if now != last:
                print(f"hollow: {now[0]} registered, {now[1]} running", flush=True)
                last = now
            await asyncio.sleep(1.0)
    except asyncio.CancelledError:
        pass
    finally:
        await fleet.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--devices", required=True, help="JSON file: [{name, token, port[, host, runtime]}]")
    p.add_argument("--report-interval", type=float, default=20.0)
    args = p.parse_args(argv)
    asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
