"""The gateway's CoAP endpoint: RFC 7252 messaging over one UDP socket.

    endpoint = await Endpoint.bind(site, "127.0.0.1", 5683)   # site.render(request) answers
    resp = await endpoint.request("127.0.0.1:40000", Code.GET, "/l?uid=u")   # a client request
    await endpoint.shutdown()

What it does, and what it keeps (the gateway serves 1,000 devices in a few tens of MB):

- Requests go to ``site.render(request)``, which answers a :class:`~.coap.Message` or an
  awaitable of one. A confirmable request is answered piggybacked in its ACK, or, when the
  answer takes longer than ``EMPTY_ACK_DELAY``, with an empty ACK first and a separate
  confirmable response (RFC 7252 5.2).
- Duplicate detection (RFC 7252 4.5) for requests that change something (every method but
  GET): for ``exchange_lifetime`` seconds, the encoded answer (a few dozen bytes) is kept under
  (peer address, message ID) and sent again for a retransmitted copy; a copy that arrives
  while the first is still being handled is dropped, as is a copy of a non-confirmable
  request. GETs are safe and idempotent, which 4.5 lets a server handle again instead of
  remembering: a retransmitted GET is simply answered again. One deque in arrival order ages
  the entries out (every entry has the same lifetime): no timer per entry.
- Confirmable messages the gateway sends (notifications, separate responses, its own
  requests) are retransmitted with ACK_TIMEOUT x [1, 1.5), doubling, MAX_RETRANSMIT times; an
  RST or silence ends them and tells the sender (an observation then ends, RFC 7641 4.5).
- Block1 (RFC 7959 2.5): request bodies that come in blocks are assembled, up to
  ``max_body`` bytes (4.13 beyond), one partial body per (peer, URI), answered 2.31 Continue.
- Malformed datagrams are dropped (a confirmable one is rejected with RST, 4.2) and logged;
  a request with an unknown critical option gets 4.02 (5.4.1); a request the site cannot
  handle gets 5.00 and a log line. Nothing a peer sends can raise out of the endpoint.
- CoAP ping (an empty CON) is answered with RST (4.3).

Layering for OSCORE (RFC 8613): the endpoint hands decoded requests to one ``site`` object and
sends what it answers. An OSCORE layer is a site that wraps the gateway's: it unprotects the
request (the inner message is a :class:`~.coap.Message` again, with the security context's
identity attached for :func:`~.coap_server.peer_of`), renders it with the inner site and
protects the answer. The messaging here (message IDs, ACKs, retransmission, duplicates) stays
outside OSCORE, as the RFC layers it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .coap import (
    ACK,
    CON,
    KNOWN_CRITICAL,
    NON,
    RST,
    Code,
    FormatError,
    Message,
    code_str,
    decode,
    encode,
    encode_message,
    header_of,
    is_request,
    split_uri,
)

log = logging.getLogger(__name__)

Remote = Any  # the socket's address tuple: (host, port) or (host, port, flowinfo, scope_id)

# RFC 7252 4.8 transmission parameters.
ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
MAX_TRANSMIT_SPAN = ACK_TIMEOUT * (2**MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR  # 45 s
PROCESSING_DELAY = ACK_TIMEOUT
# RFC 7252's MAX_LATENCY is 100 s, "the maximum time a datagram is expected to take" on any
# network; on a site network a datagram takes milliseconds, so 5 s still covers every
# retransmission with a wide margin. EXCHANGE_LIFETIME is then 57 s instead of 247 s: the time
# a request's answer is remembered for duplicates (see docs/ARCHITECTURE.md, Gateway).
MAX_LATENCY = 5.0
EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY
EMPTY_ACK_DELAY = 0.1  # answer not ready by then: empty ACK now, the response separately


class CoapError(Exception):
    """A request of the gateway's got no answer (timeout) or was reset by the peer."""


class Site(Protocol):
    def render(self, request: Message) -> Message | Awaitable[Message]: ...


class _Exchange:
    """A confirmable message of ours waiting for its ACK."""

    __slots__ = ("data", "done", "handle", "remote", "timeout", "tries")

    def __init__(self, remote: Remote, data: bytes, done: Callable[[bool], None] | None) -> None:
        self.remote = remote
        self.data = data
        self.done = done
        self.tries = 0
        self.timeout = ACK_TIMEOUT * random.uniform(1.0, ACK_RANDOM_FACTOR)
        self.handle: asyncio.TimerHandle | None = None


class _Partial:
    """A request body arriving in Block1 blocks."""

    __slots__ = ("body", "deadline")

    def __init__(self, deadline: float) -> None:
        self.body = bytearray()
        self.deadline = deadline


def hostinfo(remote: Remote) -> str:
    """'host:port' ('[v6]:port') of a socket address."""
    host, port = remote[0], remote[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostinfo(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return host, int(port)


def same_peer(a: Remote, b: Remote) -> bool:
    return bool(a[0] == b[0] and a[1] == b[1])


class Endpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        site: Site,
        *,
        exchange_lifetime: float = EXCHANGE_LIFETIME,
        max_body: int = 16 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self.exchange_lifetime = exchange_lifetime
        self.max_body = max_body
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None
        self._mid = random.randrange(0x10000)
        # Duplicate detection: (peer, message ID) -> encoded answer (None while being handled).
        self._recent: dict[tuple[Remote, int], bytes | None] = {}
        self._aging: deque[tuple[float, tuple[Remote, int]]] = deque()
        self._exchanges: dict[int, _Exchange] = {}  # our CONs by message ID
        self._requests: dict[bytes, tuple[Remote, asyncio.Future[Message]]] = {}  # ours, by token
        self._partials: dict[tuple[Remote, tuple[bytes, ...]], _Partial] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def bind(cls, site: Site, host: str, port: int, **kw: Any) -> Endpoint:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(lambda: cls(site, **kw), local_addr=(host, port))
        return endpoint

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        sock = self.transport.get_extra_info("sockname")
        return sock[0], sock[1]

    def remembered(self) -> int:
        """How many requests are remembered for duplicate detection (tests, memory probes)."""
        return len(self._recent)

    # -- transport -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        log.debug("CoAP socket error: %s", exc)  # e.g. ICMP port unreachable from a gone peer

    def _send(self, data: bytes, remote: Remote) -> None:
        if self.transport is not None and not self._closed:
            self.transport.sendto(data, remote)

    def _next_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def datagram_received(self, data: bytes, addr: Remote) -> None:
        try:
            m = decode(data, addr)
        except FormatError as e:
            hdr = header_of(data)
            log.info("malformed CoAP datagram (%d B) from %s: %s", len(data), hostinfo(addr), e)
            if hdr is not None and hdr[0] == CON:
                self._send(encode(RST, Code.EMPTY, hdr[1]), addr)
            return
        try:
            if is_request(m.code):
                self._request(m)
            elif m.code == Code.EMPTY:
                if m.mtype == CON:
                    self._send(encode(RST, Code.EMPTY, m.mid), addr)  # CoAP ping
                elif m.mtype in (ACK, RST):
                    self._acked(m)
            elif m.code >> 5 in (2, 4, 5):
                self._response(m)
            else:  # reserved classes 1, 3, 6, 7
                log.info("CoAP message with reserved code %s from %s", code_str(m.code), hostinfo(addr))
                if m.mtype == CON:
                    self._send(encode(RST, Code.EMPTY, m.mid), addr)
        except Exception:
            log.exception("CoAP message from %s could not be handled", hostinfo(addr))

    # -- requests to us ------------------------------------------------------------------
    def _request(self, m: Message) -> None:
        if m.mtype not in (CON, NON):
            log.info("a request in an %s from %s; ignored", ("ACK", "RST")[m.mtype - 2], hostinfo(m.remote))
            return
        now = self.clock()
        self._age(now)
        key: tuple[Remote, int] | None = None
        if m.code != Code.GET:
            key = (m.remote, m.mid)
            if key in self._recent:
                cached = self._recent[key]
                if m.mtype == CON and cached is not None:
                    self._send(cached, m.remote)
                return
            self._recent[key] = None
            self._aging.append((now + self.exchange_lifetime, key))
        for num, _ in m.options:
            if num & 1 and num not in KNOWN_CRITICAL:
                self._answer(m, key, _error(Code.BAD_OPTION, f"unknown critical option {num}"))
                return
        if m.opt(27) is not None:  # Block1
            body = self._assemble(m, now)
            if isinstance(body, Message):
                self._answer(m, key, body)
                return
            m.payload = body
        try:
            result = self.site.render(m)
        except FormatError as e:
            result = _error(Code.BAD_REQUEST, str(e))
        except Exception:
            log.exception("%s %s from %s failed", code_str(m.code), _path(m), hostinfo(m.remote))
            result = _error(Code.INTERNAL_SERVER_ERROR, "internal error")
        if isinstance(result, Message):
            self._answer(m, key, result)
        else:
            task = asyncio.get_running_loop().create_task(self._answer_later(m, key, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _answer(self, req: Message, key: tuple[Remote, int] | None, resp: Message) -> None:
        resp.token = req.token
        if req.mtype == CON:
            resp.mtype, resp.mid = ACK, req.mid
        else:
            resp.mtype, resp.mid = NON, self._next_mid()
        data = encode_message(resp)
        if key is not None and key in self._recent:
            self._recent[key] = data
        self._send(data, req.remote)

    async def _answer_later(
        self, req: Message, key: tuple[Remote, int] | None, pending: Awaitable[Message]
    ) -> None:
        handle: asyncio.TimerHandle | None = None
        acked = [False]
        if req.mtype == CON:
            handle = asyncio.get_running_loop().call_later(EMPTY_ACK_DELAY, self._empty_ack, req, key, acked)
        try:
            resp = await pending
        except FormatError as e:
            resp = _error(Code.BAD_REQUEST, str(e))
        except Exception:
            log.exception("%s %s from %s failed", code_str(req.code), _path(req), hostinfo(req.remote))
            resp = _error(Code.INTERNAL_SERVER_ERROR, "internal error")
        if handle is not None:
            handle.cancel()
        if not acked[0]:
            self._answer(req, key, resp)
        else:  # the empty ACK went out: a separate, confirmable response (RFC 7252 5.2.2)
            resp.token = req.token
            self.send_con(req.remote, resp)

    def _empty_ack(self, req: Message, key: tuple[Remote, int] | None, acked: list[bool]) -> None:
        acked[0] = True
        data = encode(ACK, Code.EMPTY, req.mid)
        if key is not None and key in self._recent:
            self._recent[key] = data
        self._send(data, req.remote)

    def _age(self, now: float) -> None:
        aging, recent, partials = self._aging, self._recent, self._partials
        while aging and aging[0][0] <= now:
            recent.pop(aging.popleft()[1], None)
        if partials:
            for k in [k for k, p in partials.items() if p.deadline <= now]:
                del partials[k]

    def _assemble(self, m: Message, now: float) -> bytes | Message:
        """Block1: the whole body once the last block is in, else the answer to send now."""
        b1 = m.block1
        assert b1 is not None
        if b1.szx == 7:
            return _error(Code.BAD_REQUEST, "BERT blocks are not supported")
        k = (m.remote, tuple(v for n, v in m.options if n in (11, 15)))  # Uri-Path, Uri-Query
        partial = self._partials.get(k)
        if b1.num == 0:
            partial = _Partial(now + self.exchange_lifetime)
            self._partials[k] = partial
        elif partial is None or len(partial.body) != b1.start:
            self._partials.pop(k, None)
            return _error(Code.REQUEST_ENTITY_INCOMPLETE, "blocks out of order or missing")
        if b1.more and len(m.payload) != b1.size:
            self._partials.pop(k, None)
            return _error(Code.BAD_REQUEST, "a block that is not the last must be full")
        size1 = m.size1
        if len(partial.body) + len(m.payload) > self.max_body or (size1 or 0) > self.max_body:
            self._partials.pop(k, None)
            log.warning(
                "%s from %s: request body over %d bytes", code_str(m.code), m.remote[0], self.max_body
            )
            out = _error(Code.REQUEST_ENTITY_TOO_LARGE, f"payload over {self.max_body} bytes")
            return out.add(60, _uint(self.max_body))  # Size1: what we take
        partial.body += m.payload
        if b1.more:
            out = Message(Code.CONTINUE)
            return out.add(27, b1.encode())
        del self._partials[k]
        return bytes(partial.body)

    # -- confirmable messages of ours --------------------------------------------------
    def send_con(self, remote: Remote, msg: Message, done: Callable[[bool], None] | None = None) -> int:
        """Send ``msg`` confirmable and retransmit it until ACKed; ``done(acked)`` at the end.
        Answers its message ID (for :meth:`cancel`)."""
        mid = self._next_mid()
        msg.mtype, msg.mid = CON, mid
        ex = _Exchange(remote, encode_message(msg), done)
        old = self._exchanges.pop(mid, None)  # 65,536 messages ago: long given up
        if old is not None and old.handle is not None:
            old.handle.cancel()
        self._exchanges[mid] = ex
        if not self._closed:
            ex.handle = asyncio.get_running_loop().call_later(ex.timeout, self._retransmit, mid)
        self._send(ex.data, remote)
        return mid

    def cancel(self, mid: int) -> None:
        """Stop retransmitting a CON of ours (a newer notification replaces it)."""
        ex = self._exchanges.pop(mid, None)
        if ex is not None and ex.handle is not None:
            ex.handle.cancel()

    def _retransmit(self, mid: int) -> None:
        ex = self._exchanges.get(mid)
        if ex is None:
            return
        if ex.tries >= MAX_RETRANSMIT:
            del self._exchanges[mid]
            if ex.done is not None:
                ex.done(False)
            return
        ex.tries += 1
        ex.timeout *= 2
        ex.handle = asyncio.get_running_loop().call_later(ex.timeout, self._retransmit, mid)
        self._send(ex.data, ex.remote)

    def _acked(self, m: Message) -> None:
        ex = self._exchanges.get(m.mid)
        if ex is None or not same_peer(ex.remote, m.remote):
            if m.code != Code.EMPTY:  # a late piggybacked response: still a response
                self._response(m)
            return
        del self._exchanges[m.mid]
        if ex.handle is not None:
            ex.handle.cancel()
        if ex.done is not None:
            ex.done(m.mtype == ACK)
        if m.mtype == ACK and m.code != Code.EMPTY:
            self._response(m)

    # -- the gateway's own requests (e.g. logs from an SBC agent) ------------------------
    async def request(self, peer: str, code: int, uri: str, payload: bytes = b"") -> Message:
        """One confirmable request to ``peer`` ('host:port'); the response, or CoapError."""
        host, port = parse_hostinfo(peer)
        remote = (host, port)
        token = os.urandom(4)
        while token in self._requests:
            token = os.urandom(4)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._requests[token] = (remote, fut)

        def done(acked: bool) -> None:
            if not acked and not fut.done():
                fut.set_exception(CoapError(f"no answer from {peer}, or reset"))

        msg = Message(code, payload, split_uri(uri), token=token)
        mid = self.send_con(remote, msg, done)
        try:
            return await fut
        finally:
            self._requests.pop(token, None)
            self.cancel(mid)

    def _response(self, m: Message) -> None:
        entry = self._requests.get(m.token)
        if entry is None or not same_peer(entry[0], m.remote):
            if m.mtype == CON:  # nobody waits for it (RFC 7252 4.2)
                self._send(encode(RST, Code.EMPTY, m.mid), m.remote)
            return
        if m.mtype == CON:
            self._send(encode(ACK, Code.EMPTY, m.mid), m.remote)
        fut = entry[1]
        if not fut.done():
            fut.set_result(m)

    async def shutdown(self) -> None:
        self._closed = True
        for ex in self._exchanges.values():
            if ex.handle is not None:
                ex.handle.cancel()
        self._exchanges.clear()
        for _, fut in self._requests.values():
            if not fut.done():
                fut.set_exception(CoapError("the gateway's CoAP endpoint is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()


def _error(code: int, text: str) -> Message:
    return Message(code, text.encode()[:200])


def _uint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def _path(m: Message) -> str:
    try:
        return "/" + "/".join(m.uri_path)[:80]
    except FormatError:
        return "/?"


__all__ = ["EXCHANGE_LIFETIME", "CoapError", "Endpoint", "Site", "hostinfo", "parse_hostinfo"]
