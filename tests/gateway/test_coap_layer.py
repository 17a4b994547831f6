"""The gateway's own CoAP layer (gateway/coap.py, coap_endpoint.py, coap_server.py) on loopback:
duplicates answered from the cache, Observe notifications and their end, Block1/Block2, and
datagrams that are not CoAP. The peer is a raw UDP socket speaking RFC 7252 bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fleetlet.gateway import coap
from fleetlet.gateway.coap import ACK, CON, NON, RST, Block, Code, FormatError, Message, decode, encode
from fleetlet.gateway.coap_endpoint import EXCHANGE_LIFETIME, CoapError, Endpoint
from fleetlet.gateway.coap_provider import DocView
from fleetlet.gateway.coap_server import GatewaySite, start_server
from fleetlet.gateway.devices import DeviceState, Refusal
from fleetlet.gateway.wire import LogBatch, Report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import free_udp_port


class Backend:
    """One registered device "dev1" at 127.0.0.1; a document and a blob; counts what arrives."""

    def __init__(self) -> None:
        self.device = DeviceState("dev1", "0" * 64)
        self.device.host = "127.0.0.1"
        self.view = DocView(1, b"e1", b"\xa1\x00\x01")
        self.blobs: dict[bytes, bytes] = {}
        self.reports: list[Report] = []
        self.batches: list[LogBatch] = []

    async def register(self, ep: str, hello: Any, host: str) -> Any:
        return Refusal("FORBIDDEN", "UnknownDevice", "no")

    def authorize(self, ep: str, host: str) -> Any:
        if ep != "dev1":
            return Refusal("NOT_FOUND", "UnknownDevice", f"no device {ep!r}")
        if host != self.device.host:
            return Refusal("FORBIDDEN", "WrongAddress", "registered from another address")
        return self.device

    def desired(self, ep: str) -> DocView:
        return self.view

    def touch(self, d: DeviceState) -> None:
        pass

    async def blob(self, sha256: bytes) -> bytes | None:
        await asyncio.sleep(0)
        return self.blobs.get(sha256)

    def report(self, d: DeviceState, report: Report) -> None:
        self.reports.append(report)

    def logs(self, d: DeviceState, batch: LogBatch) -> None:
        self.batches.append(batch)


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self) -> Message:
        return decode(await asyncio.wait_for(self.got.get(), 10))

    async def ask(self, data: bytes) -> Message:
        self.send(data)
        return await self.recv()


@contextlib.asynccontextmanager
async def served(backend: Backend) -> AsyncIterator[tuple[GatewaySite, Endpoint, Peer]]:
    site = GatewaySite(backend)
    port = free_udp_port()
    endpoint = await start_server(site, "127.0.0.1", port)
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Peer, remote_addr=("127.0.0.1", port))
    try:
        yield site, endpoint, peer
    finally:
        transport.close()
        await endpoint.shutdown()


def req(
    code: int,
    path: str,
    mid: int,
    token: bytes = b"\x01\x02",
    opts: Any = (),
    payload: bytes = b"",
    t: int = CON,
) -> bytes:
    return encode(t, code, mid, token, [*coap.split_uri(path), *opts], payload)


def test_codec_round_trip_and_malformed_input() -> None:
    opts = [(coap.URI_PATH, b"d"), (coap.URI_PATH, b"x" * 300), (coap.BLOCK2, Block(70, True, 6).encode())]
    opts.append((coap.NO_RESPONSE, b"\x02"))
    data = encode(CON, Code.GET, 0xBEEF, b"tok", opts, b"body")
    m = decode(data, ("127.0.0.1", 1))
    assert (m.mtype, m.code, m.mid, m.token, m.payload) == (CON, Code.GET, 0xBEEF, b"tok", b"body")
    assert m.uri_path == ("d", "x" * 300) and m.block2 == Block(70, True, 6) and m.opt(258) == b"\x02"
    assert encode(m.mtype, m.code, m.mid, m.token, m.options, m.payload) == data
    assert coap.code_str(Code.CONTENT) == "2.05" and Block(3, False, 6).start == 3072
    bad = [
        b"",
        b"\x40\x01\x00",  # short header
        b"\x80\x01\x00\x01",  # version 2
        b"\x49\x01\x00\x01",  # token length 9
        b"\x44\x01\x00\x01ab",  # token past the end
        b"\x40\x01\x00\x01\xff",  # payload marker, no payload
        b"\x40\x01\x00\x01\xf0",  # option delta 15
        b"\x40\x01\x00\x01\xbd",  # option length byte missing
        b"\x40\x01\x00\x01\xb5ab",  # option value past the end
        b"\x41\x00\x00\x01a",  # empty message with a token
    ]
    for data in bad:
        with pytest.raises(FormatError):
            decode(data)
    with pytest.raises(FormatError):
        _ = decode(encode(CON, Code.GET, 1, b"", [(coap.URI_PATH, b"\xff\xfe")])).uri_path


async def test_retransmitted_post_is_answered_from_the_cache_and_processed_once() -> None:
    backend = Backend()
    async with served(backend) as (_, endpoint, peer):
        post = req(Code.POST, "/d/dev1/report", 0x1234, payload=Report(gen=1).to_cbor())
        first = await peer.ask(post)
        assert (first.mtype, first.code, first.mid, first.token) == (ACK, Code.CHANGED, 0x1234, b"\x01\x02")
        again = [await peer.ask(post) for _ in range(2)]  # two retransmissions
        assert all(
            encode(m.mtype, m.code, m.mid, m.token, m.options, m.payload) == post_answer(first) for m in again
        )
        assert len(backend.reports) == 1 and endpoint.remembered() == 1
        # What is remembered is the encoded answer, not the request or a message object.
        assert list(endpoint._recent.values()) == [post_answer(first)]
        assert (
            await peer.ask(req(Code.POST, "/d/dev1/report", 0x1235, payload=Report(gen=2).to_cbor()))
        ).code == Code.CHANGED
        assert [r.gen for r in backend.reports] == [1, 2]  # a new message ID is a new request
        # A NON duplicate is dropped silently; GETs are safe: answered again, not remembered.
        peer.send(req(Code.POST, "/d/dev1/report", 0x2000, payload=Report(gen=3).to_cbor(), t=NON))
        assert (await peer.recv()).mtype == NON
        peer.send(req(Code.POST, "/d/dev1/report", 0x2000, payload=Report(gen=3).to_cbor(), t=NON))
        get = req(Code.GET, "/d/dev1/desired", 0x3000)
        assert (await peer.ask(get)).code == Code.CONTENT and (await peer.ask(get)).code == Code.CONTENT
        assert len(backend.reports) == 3 and endpoint.remembered() == 3
    assert 45 < EXCHANGE_LIFETIME < 60


def post_answer(m: Message) -> bytes:
    return encode(m.mtype, m.code, m.mid, m.token, m.options, m.payload)


async def test_remembered_requests_age_out() -> None:
    now = [100.0]
    endpoint = Endpoint(GatewaySite(Backend()), exchange_lifetime=57.0, clock=lambda: now[0])
    endpoint.transport = _Sink()  # type: ignore[assignment]
    for mid in range(5):
        endpoint.datagram_received(
            req(Code.POST, "/d/dev1/report", mid, payload=Report(gen=1).to_cbor()), ("127.0.0.1", 9)
        )
        now[0] += 10
    assert endpoint.remembered() == 5
    now[0] = 100.0 + 57 + 25  # the first three are older than the lifetime
    endpoint.datagram_received(req(Code.GET, "/d/dev1/desired", 99), ("127.0.0.1", 9))
    assert endpoint.remembered() == 2


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


async def test_observe_notifications_and_their_end() -> None:
    backend = Backend()
    async with served(backend) as (site, endpoint, peer):
        first = await peer.ask(req(Code.GET, "/d/dev1/desired", 1, b"ob", [(coap.OBSERVE, b"")]))
        assert first.code == Code.CONTENT and first.observe is not None and first.payload == backend.view.doc
        assert site.devices.observer_count() == 1
        backend.view = DocView(2, b"e2", b"\xa1\x00\x02")
        site.devices.notify("dev1")
        n1 = await peer.recv()
        assert (n1.mtype, n1.code, n1.token, n1.etag, n1.payload) == (
            CON,
            Code.CONTENT,
            b"ob",
            b"e2",
            backend.view.doc,
        )
        assert n1.observe is not None and n1.observe > first.observe
        peer.send(encode(ACK, Code.EMPTY, n1.mid))
        # Re-registering with the same token replaces the entry, numbers keep increasing.
        again = await peer.ask(
            req(Code.GET, "/d/dev1/desired", 2, b"ob", [(coap.OBSERVE, b""), (coap.ETAG, b"e2")])
        )
        assert again.code == Code.VALID and again.observe is not None and again.observe > n1.observe
        assert site.devices.observer_count() == 1
        # A newer change while a notification is unacknowledged replaces it (one in flight).
        backend.view = DocView(3, b"e3", b"\xa1\x00\x03")
        site.devices.notify("dev1")
        n2 = await peer.recv()
        backend.view = DocView(4, b"e4", b"\xa1\x00\x04")
        site.devices.notify("dev1")
        n3 = await peer.recv()
        assert n3.etag == b"e4" and n3.mid != n2.mid and n2.mid not in endpoint._exchanges
        # RST to a notification ends the observation (RFC 7641 3.6).
        peer.send(encode(RST, Code.EMPTY, n3.mid))
        await _until(lambda: site.devices.observer_count() == 0)
        # Observe=1 deregisters; a refused request establishes nothing.
        await peer.ask(req(Code.GET, "/d/dev1/desired", 3, b"o2", [(coap.OBSERVE, b"")]))
        assert site.devices.observer_count() == 1
        await peer.ask(req(Code.GET, "/d/dev1/desired", 4, b"o2", [(coap.OBSERVE, b"\x01")]))
        assert site.devices.observer_count() == 0
        # A refused re-registration ends the observation of that token (RFC 7641 4.1).
        await peer.ask(req(Code.GET, "/d/dev1/desired", 6, b"o4", [(coap.OBSERVE, b"")]))
        assert site.devices.observer_count() == 1
        backend.device.host = "127.0.0.2"  # now registered from elsewhere: 4.03
        gone = await peer.ask(req(Code.GET, "/d/dev1/desired", 7, b"o4", [(coap.OBSERVE, b"")]))
        assert gone.code == Code.FORBIDDEN and site.devices.observer_count() == 0
        backend.device.host = "127.0.0.1"
        refused = await peer.ask(req(Code.GET, "/d/nobody/desired", 5, b"o3", [(coap.OBSERVE, b"")]))
        assert (
            refused.code == Code.NOT_FOUND and refused.observe is None and site.devices.observer_count() == 0
        )


async def test_observers_per_device_are_capped() -> None:
    backend = Backend()
    async with served(backend) as (site, _, peer):
        for i in range(10):
            await peer.ask(req(Code.GET, "/d/dev1/desired", 10 + i, bytes([i]), [(coap.OBSERVE, b"")]))
        assert site.devices.observer_count() == 4


async def test_block2_of_a_big_blob_and_of_a_notification() -> None:
    import hashlib

    backend = Backend()
    data = bytes(range(256)) * 20  # 5,120 bytes
    sha = hashlib.sha256(data).digest()
    backend.blobs[sha] = data
    async with served(backend) as (site, _, peer):
        body = bytearray()
        num, mid = 0, 100
        while True:
            opts = [(coap.BLOCK2, Block(num, False, 2).encode())]  # 64-byte blocks
            m = await peer.ask(req(Code.GET, f"/b/{sha.hex()}", mid, opts=opts))
            assert (
                m.code == Code.CONTENT and m.block2 is not None and m.opt(coap.SIZE2) == coap.uint(len(data))
            )
            body += m.payload
            if not m.block2.more:
                break
            num, mid = num + 1, mid + 1
        assert bytes(body) == data and num == 79
        whole = await peer.ask(req(Code.GET, f"/b/{sha.hex()}", 999))  # no Block2: 1,024-byte blocks
        assert whole.block2 == Block(0, True, 6) and len(whole.payload) == 1024
        out = await peer.ask(
            req(Code.GET, f"/b/{sha.hex()}", 1000, opts=[(coap.BLOCK2, Block(80, False, 6).encode())])
        )
        assert out.code == Code.BAD_REQUEST
        missing = await peer.ask(req(Code.GET, "/b/" + "00" * 32, 1001))
        assert missing.code == Code.NOT_FOUND
        # A document bigger than a block: the notification carries block 0 (RFC 7959 3.4).
        await peer.ask(req(Code.GET, "/d/dev1/desired", 1002, b"ob", [(coap.OBSERVE, b"")]))
        backend.view = DocView(2, b"big", b"\x00" * 3000)
        site.devices.notify("dev1")
        n = await peer.recv()
        assert n.block2 == Block(0, True, 6) and len(n.payload) == 1024 and n.observe is not None


async def test_block1_request_bodies_are_assembled_up_to_the_limit() -> None:
    from fleetlet.gateway.wire import LogLine, LogStream

    backend = Backend()
    batch = LogBatch(
        uid="u", lines=tuple(LogLine(i, LogStream.STDOUT, f"line {i} " + "x" * 40) for i in range(60))
    )
    payload = batch.to_cbor()
    assert 2048 < len(payload) < 4096
    async with served(backend) as (_, _, peer):
        mid = 500
        for num in range(0, len(payload), 1024):
            more = num + 1024 < len(payload)
            opts = [(coap.BLOCK1, Block(num // 1024, more, 6).encode())]
            m = await peer.ask(req(Code.POST, "/d/dev1/logs", mid, b"b1", opts, payload[num : num + 1024]))
            mid += 1
            assert m.code == (Code.CONTINUE if more else Code.CHANGED)
        assert backend.batches == [batch]
        # Out of order: 4.08; over the 16 KiB limit: 4.13 with Size1.
        skip = await peer.ask(
            req(
                Code.POST,
                "/d/dev1/logs",
                600,
                b"b2",
                [(coap.BLOCK1, Block(3, True, 6).encode())],
                b"x" * 1024,
            )
        )
        assert skip.code == Code.REQUEST_ENTITY_INCOMPLETE
        mid = 700
        for num in range(17):
            m = await peer.ask(
                req(
                    Code.POST,
                    "/d/dev1/logs",
                    mid + num,
                    b"b3",
                    [(coap.BLOCK1, Block(num, True, 6).encode())],
                    b"y" * 1024,
                )
            )
            if m.code != Code.CONTINUE:
                break
        assert m.code == Code.REQUEST_ENTITY_TOO_LARGE and m.opt(coap.SIZE1) is not None
        big = await peer.ask(req(Code.POST, "/d/dev1/report", 800, payload=b"\xa0" * 17000))
        assert big.code == Code.REQUEST_ENTITY_TOO_LARGE


async def test_datagrams_that_are_not_coap_and_odd_requests() -> None:
    backend = Backend()
    async with served(backend) as (_, _, peer):
        peer.send(b"\x00")  # not CoAP at all: dropped
        peer.send(b"\x40\x01\x12\x34\xf0")  # a malformed CON: RST (RFC 7252 4.2)
        rst = await peer.recv()
        assert (rst.mtype, rst.code, rst.mid) == (RST, Code.EMPTY, 0x1234)
        ping = await peer.ask(encode(CON, Code.EMPTY, 0x99))
        assert (ping.mtype, ping.mid) == (RST, 0x99)
        crit = await peer.ask(req(Code.GET, "/d/dev1/desired", 7, opts=[(2049, b"x")]))
        assert crit.code == Code.BAD_OPTION
        assert (await peer.ask(req(Code.GET, "/nowhere", 8))).code == Code.NOT_FOUND
        assert (await peer.ask(req(Code.PUT, "/d/dev1/desired", 9))).code == Code.METHOD_NOT_ALLOWED
        assert (
            await peer.ask(req(Code.POST, "/d/dev1/report", 10, payload=b"\xff\x00"))
        ).code == Code.BAD_REQUEST
        bad_utf8 = encode(CON, Code.GET, 11, b"", [(coap.URI_PATH, b"\xff")])
        assert (await peer.ask(bad_utf8)).code == Code.BAD_REQUEST
        unexpected = await peer.ask(encode(CON, Code.CONTENT, 12, b"zz", [], b"hi"))  # nobody asked
        assert unexpected.mtype == RST
        wkc = await peer.ask(req(Code.GET, "/.well-known/core", 13))
        assert b'</rd>;rt="core.rd"' in wkc.payload and wkc.content_format == coap.LINK_FORMAT
        # Still serving.
        assert (await peer.ask(req(Code.GET, "/d/dev1/desired", 14))).code == Code.CONTENT


async def test_the_gateways_own_request_and_a_silent_peer() -> None:
    """Endpoint.request (logs from an SBC agent): piggybacked and separate answers, RST."""
    port = free_udp_port()
    endpoint = await Endpoint.bind(GatewaySite(Backend()), "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    transport, agent = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", port))
    try:
        gw = ("127.0.0.1", endpoint.address[1])
        pending = asyncio.create_task(endpoint.request(f"127.0.0.1:{port}", Code.GET, "/l?uid=u&n=5"))
        r = await agent.recv()
        assert r.code == Code.GET and r.uri_path == ("l",) and r.uri_query == ("uid=u", "n=5")
        transport.sendto(encode(ACK, Code.CONTENT, r.mid, r.token, [], b"hi"), gw)
        assert (await pending).payload == b"hi"
        pending = asyncio.create_task(endpoint.request(f"127.0.0.1:{port}", Code.GET, "/l"))
        r = await agent.recv()
        transport.sendto(encode(ACK, Code.EMPTY, r.mid), gw)  # separate response follows
        transport.sendto(encode(CON, Code.CONTENT, 0x4242, r.token, [], b"later"), gw)
        ack = await agent.recv()
        assert (ack.mtype, ack.mid) == (ACK, 0x4242)
        assert (await pending).payload == b"later"
        pending = asyncio.create_task(endpoint.request(f"127.0.0.1:{port}", Code.GET, "/l"))
        r = await agent.recv()
        transport.sendto(encode(RST, Code.EMPTY, r.mid), gw)
        with pytest.raises(CoapError):
            await pending
    finally:
        transport.close()
        await endpoint.shutdown()


async def _until(pred: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 - a state change in another object
            await asyncio.sleep(0.01)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=80), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_random_datagrams_never_raise(data: bytes, flips: list[int]) -> None:
    """Random bytes, and valid requests with bytes flipped, straight into the endpoint."""
    endpoint = Endpoint(GatewaySite(Backend()))
    sink = _Sink()
    endpoint.transport = sink  # type: ignore[assignment]
    base = bytearray(req(Code.POST, "/d/dev1/report", 7, payload=Report(gen=1).to_cbor()))
    for f in flips:
        base[f % len(base)] ^= 1 + f % 255
    loop = asyncio.new_event_loop()
    try:
        for datagram in (data, bytes(base)):
            loop.call_soon(endpoint.datagram_received, datagram, ("127.0.0.1", 9))
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.run_until_complete(endpoint.shutdown())
    finally:
        loop.close()
    for sent, _ in sink.sent:
        m = decode(sent)  # whatever went out is well-formed CoAP
        assert m.code >> 5 != 5 or m.code == 0xA5, m
