"""Sleepy devices poll /d/<dev>/desired with their ETag: 2.03 Valid when nothing changed.

A constrained client (the MicroPython firmware) sends Block2 with block 0 on every GET to
propose its block size; that early negotiation must not cost it the 2.03 Valid answer.
A real `fleetlet server` + `fleetlet gateway`; the device is the aiocoap simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from fleetlet.gateway.wire import DesiredDoc

from tests.fixtures import ServerProcess

from .devsim import DeviceSim
from .harness import Cluster, eventually, micropython_workload, running_cluster

pytestmark = pytest.mark.e2e

GW = "gw-sleepy"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("sleepy"), fleetlet_bin) as c:
        yield c


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> tuple[ServerProcess, int]:
    return cluster.start_gateway(GW, cluster.gateway_token(GW))


async def _poll(dev: DeviceSim, etag: bytes | None, block: int | None, szx: int = 4) -> Message:
    msg = Message(code=Code.GET, uri=f"{dev.base}/d/{dev.name}/desired")
    if etag is not None:
        msg.opt.etags = (etag,)
    if block is not None:
        msg.opt.block2 = BlockOption.BlockwiseTuple(block, False, szx)
    req = dev.ctx.request(msg, handle_blockwise=False)  # the device's own Block2, as sent
    resp: Message = await asyncio.wait_for(req.response, 30)
    return resp


async def _bind(cluster: Cluster, device: str, wl: dict[str, Any]) -> None:
    async with cluster.api() as api:
        await api.create(wl)
        await api.bind("default", wl["metadata"]["name"], device)


async def test_etag_poll_with_block2_zero_gets_valid_then_the_new_doc(
    cluster: Cluster, gateway: tuple[ServerProcess, int]
) -> None:
    _, port = gateway
    config = cluster.add_device("sleepy1", GW)
    async with DeviceSim("sleepy1", config["token"], port) as dev:
        await dev.registered()
        first = await _poll(dev, None, 0)
        assert first.code == Code.CONTENT
        etag = bytes(first.opt.etag)
        gen0 = DesiredDoc.from_cbor(first.payload).gen

        # Nothing changed: Valid, with and without the block-0 size proposal, same ETag.
        for block in (0, None):
            resp = await _poll(dev, etag, block)
            assert resp.code == Code.VALID, (block, resp.code)
            assert bytes(resp.opt.etag) == etag and not resp.payload
        # A stale ETag gets the document, not Valid.
        resp = await _poll(dev, b"\x00stale\x00", 0)
        assert resp.code == Code.CONTENT and bytes(resp.opt.etag) == etag

        await _bind(cluster, "sleepy1", micropython_workload("sleepy-app"))

        async def changed() -> Message | None:
            r = await _poll(dev, etag, 0)
            return r if r.code == Code.CONTENT else None

        resp = await eventually(changed, "the new desired document instead of 2.03 Valid")
        new_etag = bytes(resp.opt.etag)
        assert new_etag != etag
        assert resp.opt.block2 is None or not resp.opt.block2.more  # fits one 256-byte block
        doc = DesiredDoc.from_cbor(resp.payload)
        assert doc.gen > gen0 and [w.name for w in doc.workloads] == ["default/sleepy-app"]
        # Polling with the new ETag is Valid again.
        assert (await _poll(dev, new_etag, 0)).code == Code.VALID


async def test_later_blocks_are_never_answered_valid(
    cluster: Cluster, gateway: tuple[ServerProcess, int]
) -> None:
    """Block 1+ continues a transfer: the client needs the bytes, whatever its ETag says."""
    _, port = gateway
    config = cluster.add_device("sleepy2", GW)
    big = "x = 1\n" * 10
    source = f"# {big}\nasync def main(ctx):\n    pass\n"
    config_ = {f"k{i:03d}": "v" * 20 for i in range(8)}
    await _bind(cluster, "sleepy2", micropython_workload("sleepy-big", source, config=config_))
    async with DeviceSim("sleepy2", config["token"], port) as dev:
        await dev.registered()

        async def with_doc() -> Message | None:
            r = await _poll(dev, None, 0, szx=0)  # 16-byte blocks: the doc spans several
            return r if r.code == Code.CONTENT and r.opt.block2 is not None and r.opt.block2.more else None

        first = await eventually(with_doc, "a desired document larger than one 16-byte block")
        etag = bytes(first.opt.etag)
        resp = await _poll(dev, etag, 1, szx=0)
        assert resp.code == Code.CONTENT and resp.opt.block2.block_number == 1
        assert bytes(resp.opt.etag) == etag and len(resp.payload) == 16
