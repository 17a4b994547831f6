"""CoAP resources of the gateway, RFC 7252/7641/7959/6690/9176 shapes.

    POST /rd?ep=<device>        registration (hello -> 2.01 Created, Location-Path rd/<device>)
    GET  /d/<device>/desired    desired document; Observe; ETag (2.03 Valid on a match); Max-Age
    POST /d/<device>/report     report -> 2.04 Changed
    POST /d/<device>/logs       log batch -> 2.04 Changed
    GET  /b/<sha256 hex>        blob, Block2 served statelessly from any block number
    GET  /.well-known/core      RFC 6690 link format

Bad input answers 4.00 (malformed CBOR or wrong types, with the field path as diagnostic
payload), 4.04 (unknown path or blob), 4.05 (method), 4.13 (over the size limit), 4.01/4.03
(unregistered or unknown device), and is logged; no request can raise out of a resource.

The messaging (message IDs, ACKs, retransmission, duplicate detection, Block1 assembly) is
gateway/coap_endpoint.py; messages and the codec are gateway/coap.py. Both are the gateway's
own instead of aiocoap's: see docs/ARCHITECTURE.md (Gateway, memory) for the measurements.
:meth:`GatewaySite.render` is the one entry: it answers a response, or an awaitable of one
for the handlers that wait (registration, blobs from the store). Observations are one small
record each (peer, token, block size, the message ID of a notification in flight), kept per
device; a changed document is rendered once per device and sent to each observer.

Layering for OSCORE (RFC 8613): the endpoint hands requests to one site. An OSCORE layer is a
site wrapping :class:`GatewaySite`: it unprotects the request, calls ``render``, protects the
answer (notifications go through :meth:`GatewaySite.send`, the same hook). :func:`peer_of` is
the single place that turns a request into the peer identity used for authorization: it is
where a security context's device name would replace the v1 rule (a device is identified by
the source address it registered from).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from .coap import (
    BLOCK2,
    CBOR,
    CONTENT_FORMAT,
    ETAG,
    LINK_FORMAT,
    LOCATION_PATH,
    MAX_AGE,
    OBSERVE,
    OCTET_STREAM,
    PROXY_SCHEME,
    PROXY_URI,
    SIZE2,
    Block,
    Code,
    FormatError,
    Message,
    code_str,
    uint,
)
from .coap_endpoint import EXCHANGE_LIFETIME, Endpoint, Remote, hostinfo
from .devices import DeviceState, Refusal
from .wire import MAX_PAYLOAD, Hello, LogBatch, MirrorOffer, Registered, Report, WireError

log = logging.getLogger(__name__)

MAX_EP_LENGTH = 253
BLOCK_SZX = 6  # 1024-byte blocks: what fits a datagram on any link here (no BERT)
MAX_OBSERVERS = 4  # per device; a device that re-observes with new tokens ends its old ones
PROXYING_NOT_SUPPORTED = 0xA5
_CBOR = uint(CBOR)

Answer = Message | Awaitable[Message]


class Backend(Protocol):
    """What the resources need from the provider (gateway/coap_provider.py)."""

    async def register(self, ep: str, hello: Hello, host: str) -> Registered | Refusal: ...

    def authorize(self, ep: str, host: str) -> DeviceState | Refusal: ...

    def desired(self, ep: str) -> Any: ...  # DocView: gen, etag, doc

    def touch(self, d: DeviceState) -> None: ...

    async def blob(self, sha256: bytes) -> bytes | None: ...

    def report(self, d: DeviceState, report: Report) -> None: ...

    def logs(self, d: DeviceState, batch: LogBatch) -> None: ...


def peer_of(request: Message) -> str:
    """The requester's identity for authorization: its host address (v1, until OSCORE)."""
    return str(request.remote[0]) if request.remote else ""


def _remember(peers: dict[str, str] | None, ep: str, request: Message) -> None:
    """Where an authorized device last spoke from (host:port): the gateway asks an SBC agent
    for logs there (gateway/tunnel.py), through NAT as the answer to its own traffic."""
    if peers is not None and request.remote:
        where = hostinfo(request.remote)
        if peers.get(ep) != where:
            peers[ep] = where


def _error(code: int, text: str) -> Message:
    return Message(code, text.encode()[:200])


def _refusal(r: Refusal) -> Message:
    return _error(getattr(Code, r.code), r.message)


def _valid_ep(ep: str) -> bool:
    return 0 < len(ep) <= MAX_EP_LENGTH and all(c.isalnum() or c in "-." for c in ep) and ep.isascii()


def _block(want: Block | None, response: Message) -> Message:
    """Serve the block the request asks for (RFC 7959), statelessly from the full payload."""
    payload = response.payload
    if want is None and len(payload) <= 1 << (BLOCK_SZX + 4):
        return response
    szx = min(want.szx, BLOCK_SZX) if want is not None else BLOCK_SZX
    number = want.num if want is not None else 0
    if want is not None and want.szx > BLOCK_SZX:  # a bigger block asked: same offset, smaller blocks
        number = want.start >> (szx + 4)
    size = 1 << (szx + 4)
    start = number * size
    if start >= len(payload) and len(payload) > 0:
        return _error(Code.BAD_REQUEST, "block out of range")
    response.payload = payload[start : start + size]
    response.add(BLOCK2, Block(number, start + size < len(payload), szx).encode())
    response.add(SIZE2, uint(len(payload)))
    return response


def _guarded(what: str, request: Message, fn: Callable[[], Message]) -> Message:
    """Run a handler: WireError -> 4.00 with the field path; anything else is logged, 5.00."""
    try:
        return fn()
    except WireError as e:
        log.warning("%s from %s: bad payload: %s", what, peer_of(request), e)
        return _error(Code.BAD_REQUEST, str(e))
    except FormatError as e:
        return _error(Code.BAD_REQUEST, str(e))
    except Exception:
        log.exception("%s from %s failed", what, peer_of(request))
        return _error(Code.INTERNAL_SERVER_ERROR, "internal error")


async def _guarded_async(what: str, request: Message, pending: Awaitable[Message]) -> Message:
    try:
        return await pending
    except WireError as e:
        log.warning("%s from %s: bad payload: %s", what, peer_of(request), e)
        return _error(Code.BAD_REQUEST, str(e))
    except Exception:
        log.exception("%s from %s failed", what, peer_of(request))
        return _error(Code.INTERNAL_SERVER_ERROR, "internal error")


def _too_large(request: Message, max_payload: int) -> Message | None:
    """Request bodies over the wire's limit: 4.13 (Block1 bodies are assembled by the endpoint,
    which refuses them past the same limit)."""
    size1 = request.size1
    if len(request.payload) > max_payload or (size1 is not None and size1 > max_payload):
        log.warning(
            "%s from %s: request body over %d bytes", code_str(request.code), peer_of(request), max_payload
        )
        return _error(Code.REQUEST_ENTITY_TOO_LARGE, f"payload over {max_payload} bytes")
    return None


class Observation:
    """One observer of a device's desired document (RFC 7641): ~200 bytes with its key."""

    __slots__ = ("mid", "remote", "szx", "token")

    def __init__(self, remote: Remote, token: bytes, szx: int) -> None:
        self.remote = remote
        self.token = token
        self.szx = szx  # the block size the observer asked for (Block2 in its registration)
        self.mid = -1  # message ID of a notification still being retransmitted


class RegistrationResource:
    """POST /rd?ep=<device>: RFC 9176-shaped registration with a CBOR hello."""

    max_payload = MAX_PAYLOAD

    def __init__(self, backend: Backend, peers: dict[str, str] | None = None) -> None:
        self.backend = backend
        self.peers = peers
        # The registry mirror to offer a device registering from a host (--registry-mirror).
        self.mirror_offer: Callable[[str], MirrorOffer | None] | None = None

    def render(self, request: Message) -> Answer:
        if request.code != Code.POST:
            return _error(Code.METHOD_NOT_ALLOWED, "method not allowed")
        too_large = _too_large(request, self.max_payload)
        if too_large is not None:
            return too_large
        ep = ""
        for q in request.uri_query:
            if q.startswith("ep="):
                ep = q[3:]
        if not _valid_ep(ep):
            log.warning("registration from %s without a valid ?ep=", peer_of(request))
            return _error(Code.BAD_REQUEST, "missing or invalid ?ep=<device name>")
        return _guarded_async("registration", request, self._post(ep, request))

    async def _post(self, ep: str, request: Message) -> Message:
        hello = Hello.from_cbor(request.payload)
        result = await self.backend.register(ep, hello, peer_of(request))
        if isinstance(result, Refusal):
            return _refusal(result)
        _remember(self.peers, ep, request)
        offer = self.mirror_offer(peer_of(request)) if self.mirror_offer is not None else None
        if offer is not None:
            result = replace(result, registry_mirror=offer)
        out = Message(Code.CREATED, result.to_cbor(), [(CONTENT_FORMAT, _CBOR)])
        return out.add(LOCATION_PATH, b"rd").add(LOCATION_PATH, ep.encode())


class DeviceResources:
    """/d/<device>/{desired,report,logs}; ``desired`` is observable per device."""

    max_payload = MAX_PAYLOAD

    def __init__(
        self,
        backend: Backend,
        *,
        max_age: int = 60,
        peers: dict[str, str] | None = None,
        log_sink: Callable[[LogBatch], Any] | None = None,
    ) -> None:
        self.backend = backend
        self.max_age = max_age
        self.peers = peers
        self.log_sink = log_sink  # also gets every accepted log batch (gateway/logbuffer.py)
        self.endpoint: Endpoint | None = None  # set when the server starts; notifications go there
        self._observers: dict[str, dict[tuple[Remote, bytes], Observation]] = {}
        self._observe_seq = 0

    # -- Observe (RFC 7641) ------------------------------------------------------------
    def observer_count(self) -> int:
        return sum(len(s) for s in self._observers.values())

    def _next_seq(self) -> bytes:
        # One increasing counter for all observations: a renewed observation (same token) or a
        # newer one never carries a number that looks older to the client (RFC 7641 4.4).
        self._observe_seq = (self._observe_seq + 1) & 0xFFFFFF
        return uint(self._observe_seq)

    def _observe(self, ep: str, request: Message) -> None:
        key = (request.remote, request.token)
        watchers = self._observers.setdefault(ep, {})
        want = request.block2
        obs = watchers.pop(key, None)  # re-registration: replace the entry (RFC 7641 4.1)
        if obs is None:
            obs = Observation(request.remote, request.token, BLOCK_SZX)
        obs.szx = min(want.szx, BLOCK_SZX) if want is not None else BLOCK_SZX
        watchers[key] = obs
        while len(watchers) > MAX_OBSERVERS:
            self._end(ep, next(iter(watchers)))

    def _end(self, ep: str, key: tuple[Remote, bytes]) -> None:
        watchers = self._observers.get(ep)
        if not watchers:
            return
        obs = watchers.pop(key, None)
        if obs is not None and obs.mid >= 0 and self.endpoint is not None:
            self.endpoint.cancel(obs.mid)
        if not watchers:
            del self._observers[ep]

    def notify(self, ep: str) -> None:
        """The device's document changed: a confirmable notification to each observer. One
        still being retransmitted is replaced by the newer one (RFC 7641 4.5.2)."""
        watchers = self._observers.get(ep)
        if not watchers or self.endpoint is None:
            return
        view = self.backend.desired(ep)
        for key, obs in list(watchers.items()):
            out = self._doc(view, Code.CONTENT)
            out.add(OBSERVE, self._next_seq())
            out = _block(Block(0, False, obs.szx) if obs.szx != BLOCK_SZX else None, out)
            out.token = obs.token
            if obs.mid >= 0:
                self.endpoint.cancel(obs.mid)
            obs.mid = self.endpoint.send_con(obs.remote, out, self._delivered(ep, key, obs))

    def _delivered(self, ep: str, key: tuple[Remote, bytes], obs: Observation) -> Callable[[bool], None]:
        def done(acked: bool) -> None:
            if (self._observers.get(ep) or {}).get(key) is not obs:
                return
            if acked:
                obs.mid = -1
            else:  # reset, or silent through every retransmission: the observer is gone
                obs.mid = -1
                log.info("observer %s of %s is gone", hostinfo(obs.remote), ep)
                self._end(ep, key)

        return done

    def _doc(self, view: Any, code: int) -> Message:
        out = Message(code, view.doc if code == Code.CONTENT else b"")
        if code == Code.CONTENT:
            out.add(CONTENT_FORMAT, _CBOR)
        out.add(ETAG, view.etag)
        out.add(MAX_AGE, uint(self.max_age))
        return out

    # -- requests ------------------------------------------------------------------------
    def render(self, request: Message, path: tuple[str, ...]) -> Answer:
        if len(path) != 2 or not _valid_ep(path[0]):
            log.info("unknown path /d/%s from %s", "/".join(path)[:80], peer_of(request))
            return _error(Code.NOT_FOUND, "no such resource")
        ep, leaf = path
        code = request.code
        if leaf == "desired" and code == Code.GET:
            return _guarded(f"desired of {ep}", request, lambda: self._desired(ep, request))
        if leaf in ("report", "logs") and code == Code.POST:
            too_large = _too_large(request, self.max_payload)
            if too_large is not None:
                return too_large
            handler = self._report if leaf == "report" else self._logs
            return _guarded(f"{leaf} of {ep}", request, lambda: handler(ep, request))
        if leaf in ("desired", "report", "logs"):
            return _error(Code.METHOD_NOT_ALLOWED, "method not allowed")
        log.info("unknown path /d/%s/%s from %s", ep, leaf[:40], peer_of(request))
        return _error(Code.NOT_FOUND, "no such resource")

    def _auth(self, ep: str, request: Message) -> DeviceState | Message:
        result = self.backend.authorize(ep, peer_of(request))
        if isinstance(result, Refusal):
            log.info(
                "%s /d/%s from %s refused: %s", code_str(request.code), ep, peer_of(request), result.message
            )
            return _refusal(result)
        _remember(self.peers, ep, request)
        return result

    def _desired(self, ep: str, request: Message) -> Message:
        observe = request.observe
        if observe == 1:  # deregistration (RFC 7641 3.6)
            self._end(ep, (request.remote, request.token))
        d = self._auth(ep, request)
        if isinstance(d, Message):
            if observe == 0:  # not established, and an existing one of this token ends (4.1)
                self._end(ep, (request.remote, request.token))
            return d
        self.backend.touch(d)
        view = self.backend.desired(ep)
        want = request.block2  # block 0 is only a size proposal: it may still get 2.03 Valid
        valid = (want is None or want.num == 0) and view.etag in request.etags
        out = self._doc(view, Code.VALID if valid else Code.CONTENT)
        if observe == 0 and (want is None or want.num == 0):
            self._observe(ep, request)
            out.add(OBSERVE, self._next_seq())
        return _block(want, out)

    def _report(self, ep: str, request: Message) -> Message:
        report = Report.from_cbor(request.payload)
        d = self._auth(ep, request)
        if isinstance(d, Message):
            return d
        self.backend.report(d, report)
        return Message(Code.CHANGED)

    def _logs(self, ep: str, request: Message) -> Message:
        batch = LogBatch.from_cbor(request.payload)
        d = self._auth(ep, request)
        if isinstance(d, Message):
            return d
        self.backend.logs(d, batch)
        if self.log_sink is not None:
            self.log_sink(batch)
        return Message(Code.CHANGED)


class BlobResource:
    """GET /b/<sha256 hex>: immutable content; any block can be asked for at any time."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def render(self, request: Message, path: tuple[str, ...]) -> Answer:
        if request.code != Code.GET:
            return _error(Code.METHOD_NOT_ALLOWED, "method not allowed")
        try:
            if len(path) != 1 or len(path[0]) != 64:
                raise ValueError
            digest = bytes.fromhex(path[0])
        except ValueError:
            log.info("bad blob path /b/%s from %s", "/".join(path)[:80], peer_of(request))
            return _error(Code.NOT_FOUND, "expected /b/<64 hex digits of sha256>")
        return _guarded_async("blob", request, self._get(digest, request))

    async def _get(self, digest: bytes, request: Message) -> Message:
        data = await self.backend.blob(digest)
        if data is None:
            log.info("blob %s not found (asked by %s)", digest.hex(), peer_of(request))
            return _error(Code.NOT_FOUND, "no such blob")
        out = Message(Code.CONTENT, data, [(CONTENT_FORMAT, uint(OCTET_STREAM)), (ETAG, digest[:8])])
        out.add(MAX_AGE, uint(86400))  # content-addressed: never changes
        return _block(request.block2, out)


# /.well-known/core (RFC 6690)
CORE_LINKS = (
    f'</rd>;rt="core.rd";ct={CBOR},'
    f'</d>;rt="fleetlet.device";ct={CBOR};title="/d/{{ep}}/desired (obs), /d/{{ep}}/report",'
    f'</b>;rt="fleetlet.blob";ct={OCTET_STREAM}'
).encode()


class GatewaySite:
    """The resources wired to one backend; :meth:`render` is what the endpoint (or OSCORE) calls."""

    def __init__(
        self, backend: Backend, *, max_age: int = 60, log_sink: Callable[[LogBatch], Any] | None = None
    ) -> None:
        self.peers: dict[str, str] = {}  # device -> host:port it last spoke from
        self.devices = DeviceResources(backend, max_age=max_age, peers=self.peers, log_sink=log_sink)
        self.registration = RegistrationResource(backend, self.peers)
        self.blobs = BlobResource(backend)

    def render(self, request: Message) -> Answer:
        path = request.uri_path
        head = path[0] if path else ""
        if head == "d":
            return self.devices.render(request, path[1:])
        if head == "b":
            return self.blobs.render(request, path[1:])
        if path == ("rd",):
            return self.registration.render(request)
        if path == (".well-known", "core"):
            if request.code != Code.GET:
                return _error(Code.METHOD_NOT_ALLOWED, "method not allowed")
            return Message(Code.CONTENT, CORE_LINKS, [(CONTENT_FORMAT, uint(LINK_FORMAT))])
        if request.opt(PROXY_URI) is not None or request.opt(PROXY_SCHEME) is not None:
            return _error(PROXYING_NOT_SUPPORTED, "this gateway is not a proxy")
        log.info("unknown path /%s from %s", "/".join(path)[:80], peer_of(request))
        return _error(Code.NOT_FOUND, "no such resource")


async def start_server(site: GatewaySite, host: str, port: int) -> Endpoint:
    """Bind the CoAP endpoint (UDP, as the wire protocol says); ``await ep.shutdown()`` stops it.
    Duplicate detection lasts EXCHANGE_LIFETIME (57 s, gateway/coap_endpoint.py)."""
    endpoint = await Endpoint.bind(
        site, host, port, exchange_lifetime=EXCHANGE_LIFETIME, max_body=MAX_PAYLOAD
    )
    site.devices.endpoint = endpoint
    return endpoint


__all__ = ["Backend", "GatewaySite", "Observation", "peer_of", "start_server"]
