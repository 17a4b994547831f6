"""CoAP messages (RFC 7252) for the gateway: the constants, a compact message and its codec.

    m = decode(datagram)                    # FormatError on a malformed datagram
    m.uri_path, m.uri_query, m.observe, m.block2, m.etags ...
    datagram = encode(CON, GET, mid, token, [(URI_PATH, b"rd")], payload)

Codes are plain ints (``class << 5 | detail``; ``code_str(0x45) == "2.05"``) and options a
list of ``(number, value bytes)`` in the order they came or were added: no per-option objects,
no copies. Block options (RFC 7959) decode to :class:`Block`. bench/hollow.py and the
firmware's coap.py carry codecs of the same shape for the other end.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# Message types
CON, NON, ACK, RST = 0, 1, 2, 3
TYPE_NAMES = ("CON", "NON", "ACK", "RST")


class Code:
    """Method and response codes (RFC 7252 12.1, RFC 8132), as ints."""

    EMPTY = 0x00
    GET, POST, PUT, DELETE, FETCH, PATCH, IPATCH = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
    CREATED, DELETED, VALID, CHANGED, CONTENT, CONTINUE = 0x41, 0x42, 0x43, 0x44, 0x45, 0x5F
    BAD_REQUEST, UNAUTHORIZED, BAD_OPTION, FORBIDDEN, NOT_FOUND = 0x80, 0x81, 0x82, 0x83, 0x84
    METHOD_NOT_ALLOWED, NOT_ACCEPTABLE, REQUEST_ENTITY_INCOMPLETE = 0x85, 0x86, 0x88
    PRECONDITION_FAILED, REQUEST_ENTITY_TOO_LARGE, UNSUPPORTED_CONTENT_FORMAT = 0x8C, 0x8D, 0x8F
    INTERNAL_SERVER_ERROR, NOT_IMPLEMENTED, SERVICE_UNAVAILABLE = 0xA0, 0xA1, 0xA3


METHODS = ("EMPTY", "GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "iPATCH")


def code_str(code: int) -> str:
    """'GET', 'POST'... for a method, '2.05' for a response."""
    return METHODS[code] if code < len(METHODS) else f"{code >> 5}.{code & 31:02d}"


def is_request(code: int) -> bool:
    return 0 < code < 32


def is_success(code: int) -> bool:
    return code >> 5 == 2


# Option numbers (RFC 7252 5.10, 7641, 7959, 8613, 7967)
IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT, LOCATION_PATH = 1, 3, 4, 5, 6, 7, 8
OSCORE, URI_PATH, CONTENT_FORMAT, MAX_AGE, URI_QUERY, ACCEPT, LOCATION_QUERY = 9, 11, 12, 14, 15, 17, 20
BLOCK2, BLOCK1, SIZE2, PROXY_URI, PROXY_SCHEME, SIZE1, NO_RESPONSE = 23, 27, 28, 35, 39, 60, 258

# Critical options (odd numbers) a request may carry here. Any other critical option in a
# request is answered 4.02 Bad Option (RFC 7252 5.4.1); elective ones are ignored.
KNOWN_CRITICAL = frozenset({IF_MATCH, URI_HOST, IF_NONE_MATCH, URI_PORT, URI_PATH, URI_QUERY, ACCEPT})
KNOWN_CRITICAL |= {BLOCK2, BLOCK1, PROXY_URI, PROXY_SCHEME}  # the last two get 5.05 from the site

# Content formats (RFC 7252 12.3)
LINK_FORMAT, OCTET_STREAM, CBOR = 40, 42, 60


class FormatError(ValueError):
    """A datagram that is not a well-formed CoAP message (RFC 7252 3)."""


class Block(NamedTuple):
    """A Block1/Block2 option value (RFC 7959 2.2)."""

    num: int
    more: bool
    szx: int  # size = 2 ** (szx + 4); 7 is reserved (BERT)

    @property
    def size(self) -> int:
        return 1 << (self.szx + 4)

    @property
    def start(self) -> int:
        return self.num << (self.szx + 4)

    def encode(self) -> bytes:
        return uint((self.num << 4) | (8 if self.more else 0) | self.szx)


def uint(v: int) -> bytes:
    """The minimal big-endian bytes of an unsigned option value (0 is empty)."""
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def to_uint(b: bytes) -> int:
    return int.from_bytes(b, "big")


class Message:
    """One CoAP message. ``remote`` is the peer's address as the socket gave it."""

    __slots__ = ("code", "mid", "mtype", "options", "payload", "remote", "token")

    def __init__(
        self,
        code: int = Code.EMPTY,
        payload: bytes = b"",
        options: list[tuple[int, bytes]] | None = None,
        *,
        mtype: int = CON,
        mid: int = 0,
        token: bytes = b"",
        remote: Any = None,  # (host, port[, flowinfo, scope_id]) as the socket gave it
    ) -> None:
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = options if options is not None else []
        self.payload = payload
        self.remote = remote

    def __repr__(self) -> str:
        return (
            f"<coap {TYPE_NAMES[self.mtype]} {code_str(self.code)} mid={self.mid} "
            f"token={self.token.hex()} {len(self.payload)} B from {self.remote}>"
        )

    # -- options -----------------------------------------------------------------------
    def opt(self, num: int) -> bytes | None:
        for n, v in self.options:
            if n == num:
                return v
        return None

    def opts(self, num: int) -> list[bytes]:
        return [v for n, v in self.options if n == num]

    def add(self, num: int, value: bytes) -> Message:
        self.options.append((num, value))
        return self

    def set_uint(self, num: int, value: int) -> Message:
        """Replace option ``num`` by one unsigned value."""
        self.options = [o for o in self.options if o[0] != num]
        self.options.append((num, uint(value)))
        return self

    def _uint(self, num: int) -> int | None:
        v = self.opt(num)
        return None if v is None else to_uint(v)

    def _text(self, num: int) -> tuple[str, ...]:
        try:
            return tuple(v.decode() for n, v in self.options if n == num)
        except UnicodeDecodeError:
            raise FormatError("an option is not UTF-8") from None

    @property
    def uri_path(self) -> tuple[str, ...]:
        return self._text(URI_PATH)

    @property
    def uri_query(self) -> tuple[str, ...]:
        return self._text(URI_QUERY)

    @property
    def observe(self) -> int | None:
        return self._uint(OBSERVE)

    @property
    def etag(self) -> bytes | None:
        return self.opt(ETAG)

    @property
    def etags(self) -> list[bytes]:
        return self.opts(ETAG)

    @property
    def content_format(self) -> int | None:
        return self._uint(CONTENT_FORMAT)

    @property
    def max_age(self) -> int | None:
        return self._uint(MAX_AGE)

    @property
    def size1(self) -> int | None:
        return self._uint(SIZE1)

    @property
    def block2(self) -> Block | None:
        return self._block(BLOCK2)

    @property
    def block1(self) -> Block | None:
        return self._block(BLOCK1)

    def _block(self, num: int) -> Block | None:
        v = self.opt(num)
        if v is None:
            return None
        if len(v) > 3:
            raise FormatError("block option longer than 3 bytes")
        x = to_uint(v)
        return Block(x >> 4, bool(x & 8), x & 7)


def _ext(v: int) -> tuple[int, bytes]:
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes((v - 13,))
    return 14, (v - 269).to_bytes(2, "big")


def encode(
    mtype: int,
    code: int,
    mid: int,
    token: bytes = b"",
    options: list[tuple[int, bytes]] | tuple[()] = (),
    payload: bytes = b"",
) -> bytes:
    """One datagram. Options are sorted by number (stably: repeated ones keep their order)."""
    out = bytearray((0x40 | (mtype << 4) | len(token), code, (mid >> 8) & 0xFF, mid & 0xFF))
    out += token
    last = 0
    for num, val in sorted(options, key=_num) if len(options) > 1 else options:
        dn, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        out.append((dn << 4) | ln)
        out += dx
        out += lx
        out += val
        last = num
    if payload:
        out.append(0xFF)
        out += payload
    return bytes(out)


def _num(o: tuple[int, bytes]) -> int:
    return o[0]


def encode_message(m: Message) -> bytes:
    return encode(m.mtype, m.code, m.mid, m.token, m.options, m.payload)


def decode(buf: bytes, remote: Any = None) -> Message:
    """Parse one datagram (RFC 7252 3); FormatError if it is not a well-formed message."""
    n = len(buf)
    if n < 4:
        raise FormatError("shorter than the 4-byte header")
    b0 = buf[0]
    if b0 >> 6 != 1:
        raise FormatError("unknown version")
    tkl = b0 & 15
    if tkl > 8:
        raise FormatError("token length over 8")
    i = 4 + tkl
    if i > n:
        raise FormatError("truncated token")
    code = buf[1]
    options: list[tuple[int, bytes]] = []
    num = 0
    payload = b""
    while i < n:
        b = buf[i]
        i += 1
        if b == 0xFF:
            if i == n:
                raise FormatError("payload marker without a payload")
            payload = buf[i:]
            break
        delta, length = b >> 4, b & 15
        if delta == 13:
            if i >= n:
                raise FormatError("truncated option")
            delta, i = buf[i] + 13, i + 1
        elif delta == 14:
            if i + 2 > n:
                raise FormatError("truncated option")
            delta, i = ((buf[i] << 8) | buf[i + 1]) + 269, i + 2
        elif delta == 15:
            raise FormatError("option delta 15")
        if length == 13:
            if i >= n:
                raise FormatError("truncated option")
            length, i = buf[i] + 13, i + 1
        elif length == 14:
            if i + 2 > n:
                raise FormatError("truncated option")
            length, i = ((buf[i] << 8) | buf[i + 1]) + 269, i + 2
        elif length == 15:
            raise FormatError("option length 15")
        if i + length > n:
            raise FormatError("option value past the end")
        num += delta
        options.append((num, buf[i : i + length]))
        i += length
    if code == Code.EMPTY and (n > 4 or tkl):
        raise FormatError("an empty message with a token, options or payload")
    return Message(
        code,
        payload,
        options,
        mtype=(b0 >> 4) & 3,
        mid=(buf[2] << 8) | buf[3],
        token=buf[4 : 4 + tkl],
        remote=remote,
    )


def header_of(buf: bytes) -> tuple[int, int] | None:
    """(type, message ID) of a datagram that has at least a CoAP header, else None: what is
    needed to reject a malformed confirmable message with RST (RFC 7252 4.2)."""
    if len(buf) < 4 or buf[0] >> 6 != 1:
        return None
    return (buf[0] >> 4) & 3, (buf[2] << 8) | buf[3]


def split_uri(path: str) -> list[tuple[int, bytes]]:
    """'/a/b?x=1&y' -> Uri-Path and Uri-Query options."""
    path, _, query = path.partition("?")
    out = [(URI_PATH, seg.encode()) for seg in path.split("/") if seg]
    return out + [(URI_QUERY, q.encode()) for q in query.split("&") if q]


__all__ = [
    "ACK",
    "CBOR",
    "CON",
    "NON",
    "RST",
    "Block",
    "Code",
    "FormatError",
    "Message",
    "code_str",
    "decode",
    "encode",
    "encode_message",
    "is_success",
    "split_uri",
]
