"""A small CPython device simulator speaking the fleetlet wire protocol over CoAP (aiocoap).

async with DeviceSim("dev1", token, port) as dev:
    assert (await dev.register()).code == CREATED
    doc, etag = await dev.desired()
    data = await dev.blob(doc.workloads[0].modules[0].sha256)
    await dev.report(Report(gen=doc.gen, workloads=(...)))
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import aiocoap
from aiocoap import Message
from aiocoap.numbers.codes import Code
from fleetlet.gateway.wire import (
    DesiredDoc,
    Hello,
    Registered,
    Report,
    Runtime,
    WorkloadState,
    WorkloadStatus,
)

__all__ = ["DeviceSim", "Report", "WorkloadState", "WorkloadStatus"]


class DeviceSim:
    def __init__(self, name: str, token: str | bytes | None, port: int, host: str = "127.0.0.1") -> None:
        self.name = name
        self.token = token.encode() if isinstance(token, str) else token
        self.base = f"coap://{host}:{port}"
        self.ctx: Any = None
        self.boot_count = 1

    async def __aenter__(self) -> DeviceSim:
        self.ctx = await aiocoap.Context.create_client_context()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.ctx.shutdown()

    async def request(self, code: Code, path: str, payload: bytes = b"", **opts: Any) -> Message:
        msg = Message(code=code, uri=f"{self.base}{path}", payload=payload, **opts)
        return await asyncio.wait_for(self.ctx.request(msg).response, 30)

    def hello(self, **over: Any) -> Hello:
        fields: dict[str, Any] = dict(
            board="esp32-s3",
            firmware="0.1.0",
            arch="xtensawin",
            runtimes=(Runtime.MICROPYTHON,),
            mem_free=100_000,
            boot_count=self.boot_count,
            token=self.token,
        )
        fields.update(over)
        return Hello(**fields)

    async def register(self, **over: Any) -> Message:
        return await self.request(Code.POST, f"/rd?ep={self.name}", self.hello(**over).to_cbor())

    async def registered(self) -> Registered:
        resp = await self.register()
        assert resp.code == Code.CREATED, (resp.code, resp.payload)
        return Registered.from_cbor(resp.payload)

    async def desired_raw(self, etag: bytes | None = None) -> Message:
        msg = Message(code=Code.GET, uri=f"{self.base}/d/{self.name}/desired")
        if etag is not None:
            msg.opt.etags = (etag,)
        return await asyncio.wait_for(self.ctx.request(msg).response, 30)

    async def desired(self) -> tuple[DesiredDoc, bytes]:
        resp = await self.desired_raw()
        assert resp.code == Code.CONTENT, (resp.code, resp.payload)
        return DesiredDoc.from_cbor(resp.payload), bytes(resp.opt.etag)

    async def observe(self) -> AsyncGenerator[tuple[DesiredDoc, bytes], None]:
        """Yields the document on every notification (the first one included)."""
        msg = Message(code=Code.GET, uri=f"{self.base}/d/{self.name}/desired", observe=0)
        req = self.ctx.request(msg)
        try:
            first = await asyncio.wait_for(req.response, 30)
            assert first.code == Code.CONTENT, (first.code, first.payload)
            yield DesiredDoc.from_cbor(first.payload), bytes(first.opt.etag)
            async for note in req.observation:
                yield DesiredDoc.from_cbor(note.payload), bytes(note.opt.etag)
        finally:
            if not req.observation.cancelled:
                req.observation.cancel()

    async def blob(self, sha256: bytes) -> bytes:
        resp = await self.request(Code.GET, f"/b/{sha256.hex()}")
        assert resp.code == Code.CONTENT, (resp.code, resp.payload)
        data = bytes(resp.payload)
        assert hashlib.sha256(data).digest() == sha256
        return data

    async def report(self, report: Report) -> Message:
        return await self.request(Code.POST, f"/d/{self.name}/report", report.to_cbor())

    async def report_running(self, doc: DesiredDoc, *, restarts: int = 0, heap: int = 90_000) -> Message:
        statuses = tuple(
            WorkloadStatus(w.uid, w.generation, WorkloadState.RUNNING, restarts=restarts)
            for w in doc.workloads
        )
        return await self.report(Report(gen=doc.gen, workloads=statuses, heap_free=heap, uptime=10))
