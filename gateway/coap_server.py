"""CoAP resources (aiocoap) of the gateway, RFC 7252/7641/7959/6690/9176 shapes.

    POST /rd?ep=<device>        registration (hello -> 2.01 Created, Location-Path rd/<device>)
    GET  /d/<device>/desired    desired document; Observe; ETag (2.03 Valid on a match); Max-Age
    POST /d/<device>/report     report -> 2.04 Changed
    POST /d/<device>/logs       log batch -> 2.04 Changed
    GET  /b/<sha256 hex>        blob, Block2 served statelessly from any block number
    GET  /.well-known/core      RFC 6690 link format

Bad input answers 4.00 (malformed CBOR or wrong types, with the field path as diagnostic
payload), 4.04 (unknown path or blob), 4.05 (method), 4.13 (over the size limit), 4.01/4.03
(unregistered or unknown device), and is logged; no request can raise out of a resource.

Layering for OSCORE (RFC 8613): :func:`build_site` returns a plain ``aiocoap.resource.Site``.
To protect it, wrap it, ``aiocoap.oscore_sitewrapper.OscoreSiteWrapper(site, credentials)``,
before handing it to the server context; the resources then see ``request.remote`` as an
``OSCOREAddress``. :func:`peer_of` is the single place that turns a request into the peer
identity used for authorization: it is where a security context's device name would replace
the v1 rule (a device is identified by the source address it registered from).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiocoap import Message
from aiocoap import error as coap_error
from aiocoap.interfaces import ObservableResource as ObservableInterface
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.resource import PathCapable, Resource, Site
from aiocoap.util.linkformat import Link, LinkFormat

from .devices import DeviceState, Refusal
from .wire import MAX_PAYLOAD, Hello, LogBatch, Registered, Report, WireError

log = logging.getLogger(__name__)

CBOR = ContentFormat.CBOR
MAX_EP_LENGTH = 253


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
    remote = request.remote
    hostinfo = str(getattr(remote, "hostinfo", "") or "")
    if hostinfo.startswith("["):
        return hostinfo[1:].partition("]")[0]
    return hostinfo.rpartition(":")[0] if ":" in hostinfo else hostinfo


def _remember(peers: dict[str, str] | None, ep: str, request: Message) -> None:
    """Where an authorized device last spoke from (host:port): the gateway asks an SBC agent
    for logs there (gateway/tunnel.py), through NAT as the answer to its own traffic."""
    if peers is not None:
        hostinfo = str(getattr(request.remote, "hostinfo", "") or "")
        if hostinfo and peers.get(ep) != hostinfo:
            peers[ep] = hostinfo


def _error(code: Code, text: str) -> Message:
    return Message(code=code, payload=text.encode()[:200])


def _refusal(r: Refusal) -> Message:
    return _error(getattr(Code, r.code), r.message)


def _valid_ep(ep: str) -> bool:
    return 0 < len(ep) <= MAX_EP_LENGTH and all(c.isalnum() or c in "-." for c in ep) and ep.isascii()


def _block(request: Message, response: Message) -> Message:
    """Serve the block the request asks for (RFC 7959), statelessly from the full payload."""
    payload = response.payload
    remote = request.remote
    max_size = int(getattr(remote, "maximum_payload_size", 1024))
    want = request.opt.block2
    if want is None and len(payload) <= max_size:
        return response
    szx = want.size_exponent if want is not None else int(getattr(remote, "maximum_block_size_exp", 6))
    szx = min(szx, 6)  # no BERT
    number = want.block_number if want is not None else 0
    size = 1 << (szx + 4)
    start = number * size
    if start >= len(payload) and len(payload) > 0:
        return _error(Code.BAD_REQUEST, "block out of range")
    part = payload[start : start + size]
    more = start + size < len(payload)
    out = response.copy(payload=part)
    out.opt.block2 = (number, more, szx)
    out.opt.size2 = len(payload)
    return out


async def _guarded(what: str, request: Message, fn: Callable[[], Any]) -> Message:
    """Run a handler: WireError -> 4.00 with the field path; anything else is logged, 5.00."""
    try:
        result: Message = await fn()
        return result
    except WireError as e:
        log.warning("%s from %s: bad payload: %s", what, peer_of(request), e)
        return _error(Code.BAD_REQUEST, str(e))
    except coap_error.RenderableError:
        raise
    except Exception:
        log.exception("%s from %s failed", what, peer_of(request))
        return _error(Code.INTERNAL_SERVER_ERROR, "internal error")


class _Sized:
    """Refuses request bodies (assembled via Block1 or not) over the wire's limit with 4.13."""

    max_payload = MAX_PAYLOAD

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        b1 = request.opt.block1
        total = len(request.payload) + (b1.start if b1 is not None else 0)
        size1 = request.opt.size1
        if total > self.max_payload or (size1 is not None and size1 > self.max_payload):
            log.warning(
                "%s from %s: request body over %d bytes", request.code, peer_of(request), self.max_payload
            )
            err = coap_error.RequestEntityTooLarge(f"payload over {self.max_payload} bytes")
            raise err
        return bool(request.code != Code.GET)


class RegistrationResource(_Sized, Resource):  # type: ignore[misc]
    """POST /rd?ep=<device>: RFC 9176-shaped registration with a CBOR hello."""

    rt = "core.rd"
    ct = int(CBOR)

    def __init__(self, backend: Backend, peers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.peers = peers

    async def render_post(self, request: Message) -> Message:
        return await _guarded("registration", request, lambda: self._post(request))

    async def _post(self, request: Message) -> Message:
        ep = ""
        for q in request.opt.uri_query:
            if q.startswith("ep="):
                ep = q[3:]
        if not _valid_ep(ep):
            log.warning("registration from %s without a valid ?ep=", peer_of(request))
            return _error(Code.BAD_REQUEST, "missing or invalid ?ep=<device name>")
        if len(request.payload) > self.max_payload:
            return _error(Code.REQUEST_ENTITY_TOO_LARGE, f"payload over {self.max_payload} bytes")
        hello = Hello.from_cbor(request.payload)
        result = await self.backend.register(ep, hello, peer_of(request))
        if isinstance(result, Refusal):
            return _refusal(result)
        _remember(self.peers, ep, request)
        out = Message(code=Code.CREATED, payload=result.to_cbor(), content_format=CBOR)
        out.opt.location_path = ("rd", ep)
        return out


class DeviceResources(_Sized, Resource, ObservableInterface, PathCapable):  # type: ignore[misc]
    """/d/<device>/{desired,report,logs}; ``desired`` is observable per device."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_age: int = 60,
        peers: dict[str, str] | None = None,
        log_sink: Callable[[LogBatch], Any] | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.max_age = max_age
        self.peers = peers
        self.log_sink = log_sink  # also gets every accepted log batch (gateway/logbuffer.py)
        self._observers: dict[str, set[Any]] = {}

    def notify(self, ep: str) -> None:
        for obs in list(self._observers.get(ep, ())):
            obs.trigger()

    def observer_count(self) -> int:
        return sum(len(s) for s in self._observers.values())

    async def add_observation(self, request: Message, serverobservation: Any) -> None:
        path = tuple(request.opt.uri_path)
        if len(path) != 2 or path[1] != "desired" or request.code != Code.GET:
            return
        ep = path[0]
        if isinstance(self.backend.authorize(ep, peer_of(request)), Refusal):
            return  # render answers 4.01/4.03 and the observation is not established
        watchers = self._observers.setdefault(ep, set())
        watchers.add(serverobservation)

        def cancel() -> None:
            watchers.discard(serverobservation)
            if not watchers:
                self._observers.pop(ep, None)

        serverobservation.accept(cancel)

    async def render_to_pipe(self, pipe: Any) -> None:
        await ObservableInterface._render_to_pipe(self, pipe)

    async def render(self, request: Message) -> Message:
        path = tuple(request.opt.uri_path)
        if len(path) != 2 or not _valid_ep(path[0]):
            log.info("unknown path /d/%s from %s", "/".join(path)[:80], peer_of(request))
            return _error(Code.NOT_FOUND, "no such resource")
        ep, leaf = path
        handlers = {
            ("desired", Code.GET): self._desired,
            ("report", Code.POST): self._report,
            ("logs", Code.POST): self._logs,
        }
        handler = handlers.get((leaf, request.code))
        if handler is None:
            if leaf in ("desired", "report", "logs"):
                return _error(Code.METHOD_NOT_ALLOWED, "method not allowed")
            log.info("unknown path /d/%s/%s from %s", ep, leaf[:40], peer_of(request))
            return _error(Code.NOT_FOUND, "no such resource")
        return await _guarded(f"{leaf} of {ep}", request, lambda: handler(ep, request))

    def _auth(self, ep: str, request: Message) -> DeviceState | Message:
        result = self.backend.authorize(ep, peer_of(request))
        if isinstance(result, Refusal):
            log.info("%s /d/%s from %s refused: %s", request.code, ep, peer_of(request), result.message)
            return _refusal(result)
        _remember(self.peers, ep, request)
        return result

    async def _desired(self, ep: str, request: Message) -> Message:
        d = self._auth(ep, request)
        if isinstance(d, Message):
            return d
        self.backend.touch(d)
        view = self.backend.desired(ep)
        want = request.opt.block2  # block 0 is only a size proposal: it may still get 2.03 Valid
        if (want is None or want.block_number == 0) and view.etag in (request.opt.etags or ()):
            out = Message(code=Code.VALID)
        else:
            out = Message(code=Code.CONTENT, payload=view.doc, content_format=CBOR)
        out.opt.etag = view.etag
        out.opt.max_age = self.max_age
        return _block(request, out)

    async def _report(self, ep: str, request: Message) -> Message:
        report = Report.from_cbor(request.payload)
        d = self._auth(ep, request)
        if isinstance(d, Message):
            return d
        self.backend.report(d, report)
        return Message(code=Code.CHANGED)

    async def _logs(self, ep: str, request: Message) -> Message:
        batch = LogBatch.from_cbor(request.payload)
        d = self._auth(ep, request)
        if isinstance(d, Message):
            return d
        self.backend.logs(d, batch)
        if self.log_sink is not None:
            self.log_sink(batch)
        return Message(code=Code.CHANGED)


class BlobResource(Resource, PathCapable):  # type: ignore[misc]
    """GET /b/<sha256 hex>: immutable content; any block can be asked for at any time."""

    ct = "application/octet-stream"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False

    async def render_get(self, request: Message) -> Message:
        return await _guarded("blob", request, lambda: self._get(request))

    async def _get(self, request: Message) -> Message:
        path = tuple(request.opt.uri_path)
        try:
            if len(path) != 1 or len(path[0]) != 64:
                raise ValueError
            digest = bytes.fromhex(path[0])
        except ValueError:
            log.info("bad blob path /b/%s from %s", "/".join(path)[:80], peer_of(request))
            return _error(Code.NOT_FOUND, "expected /b/<64 hex digits of sha256>")
        data = await self.backend.blob(digest)
        if data is None:
            log.info("blob %s not found (asked by %s)", path[0], peer_of(request))
            return _error(Code.NOT_FOUND, "no such blob")
        out = Message(code=Code.CONTENT, payload=data, content_format=ContentFormat.OCTETSTREAM)
        out.opt.etag = digest[:8]
        out.opt.max_age = 86400  # content-addressed: never changes
        return _block(request, out)


class CoreResource(Resource):  # type: ignore[misc]
    """/.well-known/core (RFC 6690)."""

    ct = int(ContentFormat.LINKFORMAT)

    async def render_get(self, request: Message) -> Message:
        links = LinkFormat(
            [
                Link("/rd", rt="core.rd", ct=str(int(CBOR))),
                Link(
                    "/d",
                    rt="fleetlet.device",
                    ct=str(int(CBOR)),
                    title="/d/{ep}/desired (obs), /d/{ep}/report",
                ),
                Link("/b", rt="fleetlet.blob", ct=str(int(ContentFormat.OCTETSTREAM))),
            ]
        )
        return Message(payload=str(links).encode(), content_format=ContentFormat.LINKFORMAT)


class GatewaySite:
    """The resources wired to one backend; ``site`` is what the server context (or OSCORE) serves."""

    def __init__(
        self, backend: Backend, *, max_age: int = 60, log_sink: Callable[[LogBatch], Any] | None = None
    ) -> None:
        self.peers: dict[str, str] = {}  # device -> host:port it last spoke from
        self.devices = DeviceResources(backend, max_age=max_age, peers=self.peers, log_sink=log_sink)
        self.site = Site()
        self.site.add_resource([".well-known", "core"], CoreResource())
        self.site.add_resource(["rd"], RegistrationResource(backend, self.peers))
        self.site.add_resource(["d"], self.devices)
        self.site.add_resource(["b"], BlobResource(backend))


# Duplicate detection (RFC 7252 4.5). aiocoap keeps every request's response, with the request,
# for EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY: 247 s with the
# RFC's MAX_LATENCY of 100 s, "the maximum time a datagram is expected to take" on any network.
# That is ~2.6 KB per request: with 1,000 devices reporting and polling every 30 s, ~16 requests
# per device are remembered, ~43 MB. A device's last retransmission leaves at MAX_TRANSMIT_SPAN
# (45 s); on the site network a datagram takes milliseconds, not 100 s, so 5 s of latency still
# covers every retransmission with a wide margin: 57 s, and ~4 remembered requests per device.
# A copy arriving even later is processed again, which RFC 7252 4.5 allows for requests handled
# idempotently: every gateway resource is (a repeated log batch may show its lines twice).
MAX_LATENCY = 5.0


def tune_deduplication(max_latency: float = MAX_LATENCY) -> float:
    """Set aiocoap's MAX_LATENCY (a documented TransportTuning parameter). The messages aiocoap
    decodes from the network take the default TransportTuning, so the class default is the only
    place to set it: it applies to the whole process. Answers the resulting EXCHANGE_LIFETIME."""
    from aiocoap.numbers.constants import TransportTuning

    TransportTuning.MAX_LATENCY = max_latency
    return float(TransportTuning().EXCHANGE_LIFETIME)


async def start_server(site: GatewaySite, host: str, port: int) -> Any:
    """Bind the CoAP server; answers the aiocoap Context (``await ctx.shutdown()`` to stop).

    UDP only, as the wire protocol says: aiocoap's default transports would also listen for
    CoAP over TCP (RFC 8323) on the same port and load its TCP/TLS modules, for nobody.
    Duplicate detection lasts :func:`tune_deduplication`'s EXCHANGE_LIFETIME (57 s)."""
    import aiocoap

    tune_deduplication()
    return await aiocoap.Context.create_server_context(site.site, bind=(host, port), transports=["udp6"])
