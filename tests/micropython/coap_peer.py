"""aiocoap test peer for the MicroPython CoAP client, run as a subprocess.

    python coap_peer.py [--drop 0.3] [--seed 7] [--garbage]

Binds a CoAP server on 127.0.0.1 (free port) and a UDP relay in front of it, prints one
JSON line {"server": port, "relay": port} and serves until killed. The relay drops a
fraction of datagrams each way (seeded RNG per direction) and, with --garbage, sends a
burst of malformed datagrams to the client before every response it forwards.

Resources: /hello (GET), /echo (POST), /blob (10 KB, Block2, ETag), /obs (observable;
POST /obs/bump changes it; GET /obs/count says how many observe it), /quiet (observable,
Max-Age 1, never changes), /etag (ETag-aware: 2.03 Valid on a matching ETag), /slow
(separate response).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.codes import Code

BLOB = b"".join(hashlib.sha256(b"fleetlet-%d" % i).digest() for i in range(320))  # 10240 bytes
BLOB_ETAG = hashlib.sha256(BLOB).digest()[:8]
ETAG_BODY = b'{"gen": 3}'
ETAG_TAG = b"\x00\x00\x00\x03"


class Hello(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=b"hello fleetlet", content_format=0)


class Echo(resource.Resource):
    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        resp = aiocoap.Message(code=Code.CHANGED, payload=request.payload)
        resp.opt.content_format = request.opt.content_format
        resp.opt.location_path = ("echo", str(len(request.payload)))
        return resp


class Blob(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        resp = aiocoap.Message(payload=BLOB, content_format=42)
        resp.opt.etag = BLOB_ETAG
        return resp


class Counter(resource.ObservableResource):
    def __init__(self, max_age: int = 60) -> None:
        super().__init__()
        self.value = 0
        self.observers = 0
        self.max_age = max_age

    def update_observation_count(self, newcount: int) -> None:
        self.observers = newcount

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        resp = aiocoap.Message(payload=b"n=%d" % self.value, content_format=0)
        resp.opt.max_age = self.max_age
        return resp


class Bump(resource.Resource):
    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.counter.value += 1
        self.counter.updated_state()
        return aiocoap.Message(code=Code.CHANGED)


class ObserverCount(resource.Resource):
    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=b"%d" % self.counter.observers)


class ETagged(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        if ETAG_TAG in request.opt.etags:
            resp = aiocoap.Message(code=Code.VALID)
        else:
            resp = aiocoap.Message(payload=ETAG_BODY, content_format=60)
        resp.opt.etag = ETAG_TAG
        resp.opt.max_age = 30
        return resp


class Slow(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        await asyncio.sleep(0.5)  # longer than aiocoap's EMPTY_ACK_DELAY: empty ACK, then CON
        return aiocoap.Message(payload=b"late but here")


def garbage(response: bytes, rng: random.Random) -> list[bytes]:
    """Malformed datagrams, some derived from the real response so they look plausible."""
    out = [
        b"",
        b"\x40",
        b"\x00\x45\x00\x01",  # version 0
        b"\x49\x45\x00\x01abcd",  # token length 9
        b"\x44\x45\x00\x01ab",  # token shorter than its length
        b"\x40\x45\x00\x01\xd1",  # extended delta runs past the end
        b"\x40\x45\x00\x01\xf0",  # delta nibble 15 without being a payload marker
        b"\x40\x45\x00\x01\x1f\x00",  # length nibble 15
        b"\x40\x45\x00\x01\xff",  # payload marker with no payload
        b"\x60\x00\x00\x01\x11",  # empty ACK with bytes after the header
        b"\x40\x01\x00\x02",  # a CON request: we are a client, it gets a RST
        b"\x50\x45\x00\x03\xff\x00",  # NON 2.05, empty token nobody asked for
    ]
    out += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(8)]
    if len(response) >= 4:
        tkl = response[0] & 0x0F
        forged = bytearray(response)
        for i in range(4, 4 + tkl):
            forged[i] ^= 0x5A  # same message id, wrong token: must not be taken as the answer
        out.append(bytes(forged))
        out.append(response[: 4 + tkl] + b"\xd1")  # the real header, then truncated options
    return out


class Relay:
    """client <-> relay <-> server, dropping datagrams at random (seeded, per direction)."""

    def __init__(self, server: tuple[str, int], drop: float, seed: int, inject: bool) -> None:
        self.server = server
        self.drop = drop
        self.up_rng = random.Random(seed)
        self.down_rng = random.Random(seed + 1)
        self.junk_rng = random.Random(seed + 2)
        self.inject = inject
        self.client: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.dropped = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay.client = addr
                if relay.up_rng.random() < relay.drop:
                    relay.dropped += 1
                    return
                assert relay.back is not None
                relay.back.sendto(data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if relay.client is None or relay.front is None:
                    return
                if relay.inject:
                    for junk in garbage(data, relay.junk_rng):
                        relay.front.sendto(junk, relay.client)
                if relay.down_rng.random() < relay.drop:
                    relay.dropped += 1
                    return
                relay.front.sendto(data, relay.client)

        self.front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self.back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.server)
        return int(self.front.get_extra_info("sockname")[1])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drop", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--garbage", action="store_true")
    args = ap.parse_args()

    counter = Counter()
    site = resource.Site()
    site.add_resource(["hello"], Hello())
    site.add_resource(["echo"], Echo())
    site.add_resource(["blob"], Blob())
    site.add_resource(["obs"], counter)
    site.add_resource(["obs", "bump"], Bump(counter))
    site.add_resource(["obs", "count"], ObserverCount(counter))
    site.add_resource(["quiet"], Counter(max_age=1))
    site.add_resource(["etag"], ETagged())
    site.add_resource(["slow"], Slow())

    # Bind a concrete port: aiocoap's simple6 transport needs one (find it via a probe socket).
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port), transports=["udp6"])
    relay = Relay(("127.0.0.1", port), args.drop, args.seed, args.garbage)
    relay_port = await relay.start()
    print(json.dumps({"server": port, "relay": relay_port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
