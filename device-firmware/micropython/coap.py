"""Small CoAP client for MicroPython: RFC 7252, Observe (RFC 7641), Block2 (RFC 7959).

Layering, bottom up:
  transport   send(buf) and awaitable recv_into(buf) -> n (net.UDPTransport is plain UDP).
  encode/decode  pure functions: bytes <-> (type, code, mid, token, options, payload).
  Client      exchanges, retransmission, dedup, Block2, Observe.
The client only ever hands whole encoded messages to the transport, so a future OSCORE
layer (RFC 8613) wraps the transport object: it unprotects in recv_into and protects in
send, and nothing above it changes.

Memory: one receive bytearray per client (block size + header room), reused for every
datagram; decoding copies only the token, option values and payload of a valid message.
The encode/decode functions also import under CPython, for host-side tests.
"""

import asyncio
import gc
import os

try:
    from micropython import const
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython: only the codec is used there, but keep the module importable
    TYPE_CHECKING = False
    if not TYPE_CHECKING:  # not redefinitions for mypy, which checks the MicroPython stubs
        from time import monotonic

        def const(expr):
            return expr

        def ticks_ms():
            return int(monotonic() * 1000)

        def ticks_diff(a, b):
            return a - b

        def ticks_add(a, b):
            return a + b


# Public names are the ones callers and tests use; the _private ones are folded by the
# compiler and take no RAM on a board.
CON, NON, ACK = 0, 1, 2
_RST = const(3)
GET, POST = 1, 2
VALID, CONTENT = 0x43, 0x45

# option numbers
ETAG, OBSERVE, URI_PATH, BLOCK2 = 4, 6, 11, 23
_LOCATION_PATH = const(8)
_CONTENT_FORMAT = const(12)
_MAX_AGE = const(14)
_URI_QUERY = const(15)
_ACCEPT = const(17)


class CoapError(Exception):
    pass


class CoapTimeout(CoapError):  # no answer after all retransmissions
    pass


class CoapReset(CoapError):  # the peer answered with RST
    pass


# --- codec --------------------------------------------------------------------------------
def uint(v):
    """Minimal big-endian bytes of an unsigned option value (0 -> empty)."""
    n = 0
    while v >> (8 * n):
        n += 1
    return v.to_bytes(n, "big")


def to_uint(b):
    return int.from_bytes(b, "big") if b else 0


def _ext(v):
    # (nibble, extension bytes) for an option delta or length
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes((v - 13,))
    return 14, (v - 269).to_bytes(2, "big")


def encode_options(opts):
    """opts: list of (number, bytes). Sorted stably by number, so repeats keep their order."""
    srt = []  # type: list
    for o in opts:  # insertion sort: stable (MicroPython's sort is not), and lists are short
        i = len(srt)
        while i and srt[i - 1][0] > o[0]:
            i -= 1
        srt.insert(i, o)
    out = bytearray()
    last = 0
    for num, val in srt:
        dn, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        out.append((dn << 4) | ln)
        out += dx
        out += lx
        out += val
        last = num
    return out


def encode(mtype, code, mid, token=b"", opts=(), payload=b""):
    if len(token) > 8:
        raise ValueError("token")
    out = bytearray(4)
    out[0] = 0x40 | (mtype << 4) | len(token)
    out[1] = code
    out[2] = (mid >> 8) & 0xFF
    out[3] = mid & 0xFF
    out += token
    if opts:
        out += encode_options(opts)
    if payload:
        out.append(0xFF)
        out += payload
    return out


def _nib(v, buf, i, n):
    # extended delta/length; returns (value, next index)
    if v < 13:
        return v, i
    if v == 13:
        if i >= n:
            raise ValueError("trunc")
        return buf[i] + 13, i + 1
    if v == 14:
        if i + 1 >= n:
            raise ValueError("trunc")
        return ((buf[i] << 8) | buf[i + 1]) + 269, i + 2
    raise ValueError("nibble 15")


def decode_options(buf, i, n):
    """Parse options from buf[i:n]; returns (list of (number, bytes), payload start or n)."""
    opts = []  # type: list
    num = 0
    while i < n:
        b = buf[i]
        i += 1
        if b == 0xFF:
            if i == n:
                raise ValueError("empty payload")  # a marker with no payload is a format error
            return opts, i
        d, i = _nib(b >> 4, buf, i, n)
        ln, i = _nib(b & 0x0F, buf, i, n)
        if i + ln > n:
            raise ValueError("trunc")
        num += d
        opts.append((num, bytes(buf[i : i + ln])))
        i += ln
    return opts, n


class Message:
    def __init__(self, mtype, code, mid, token, opts, payload):
        self.type = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.opts = opts
        self.payload = payload

    def opt(self, num, default=None):
        for o in self.opts:
            if o[0] == num:
                return o[1]
        return default

    @property
    def etag(self):
        return self.opt(ETAG)

    @property
    def max_age(self):
        return to_uint(self.opt(_MAX_AGE, b"\x3c"))  # default 60 s

    @property
    def content_format(self):
        v = self.opt(_CONTENT_FORMAT)
        return None if v is None else to_uint(v)

    @property
    def observe(self):
        v = self.opt(OBSERVE)
        return None if v is None else to_uint(v)

    @property
    def location_path(self):
        return "/" + "/".join(o[1].decode() for o in self.opts if o[0] == _LOCATION_PATH)

    @property
    def block2(self):
        v = self.opt(BLOCK2)
        return None if v is None else block_decode(to_uint(v))

    @property
    def ok(self):
        return self.code >> 5 == 2

    def code_str(self):
        return "%d.%02d" % (self.code >> 5, self.code & 31)


def decode(buf, n=None):
    """Decode buf[:n] into a Message; ValueError on anything malformed."""
    if n is None:
        n = len(buf)
    if n < 4:
        raise ValueError("short")
    b0 = buf[0]
    tkl = b0 & 0x0F
    if b0 >> 6 != 1 or tkl > 8 or 4 + tkl > n:
        raise ValueError("header")
    code = buf[1]
    if code == 0 and n != 4:
        raise ValueError("empty msg with data")
    token = bytes(buf[4 : 4 + tkl])
    opts, p = decode_options(buf, 4 + tkl, n)
    payload = bytes(buf[p:n]) if p < n else b""
    return Message((b0 >> 4) & 3, code, (buf[2] << 8) | buf[3], token, opts, payload)


def block_encode(num, more, szx):
    return (num << 4) | (8 if more else 0) | szx


def block_decode(v):
    """-> (num, more, szx); szx 7 is reserved (BERT) and rejected."""
    szx = v & 7
    if szx == 7:
        raise ValueError("szx")
    return v >> 4, bool(v & 8), szx


def fresher(v1, v2, t1, t2):
    """RFC 7641 3.4: is notification (v2 at ms t2) newer than (v1 at ms t1)?"""
    d = v2 - v1
    return 0 < d < 0x800000 or d < -0x800000 or ticks_diff(t2, t1) > 128000


def split_uri(path, query=None):
    """'/a/b?x=1' (+ query str/list/dict) -> list of Uri-Path and Uri-Query options."""
    opts = []  # type: list
    if "?" in path:
        path, q = path.split("?", 1)
        opts.extend((_URI_QUERY, s.encode()) for s in q.split("&") if s)
    for seg in path.split("/"):
        if seg:
            opts.append((URI_PATH, seg.encode()))
    if query:
        if isinstance(query, dict):
            query = ["%s=%s" % kv for kv in query.items()]
        elif isinstance(query, str):
            query = query.split("&")
        opts.extend((_URI_QUERY, q.encode() if isinstance(q, str) else q) for q in query if q)
    return opts


# --- waiting ------------------------------------------------------------------------------
# An asyncio.Event waited on with asyncio.wait_for_ms costs about 0.8 KB per waiting task on
# the 64-bit port (wait_for runs the awaitable in a task of its own); these two cost nothing
# but the list ev = [the task dozing on it or None, set?].
async def doze(ev, ms):
    """Wait until rouse(ev) or for ms; -> whether ev was set. Clears it, like Event.clear()."""
    if not ev[1]:
        ev[0] = asyncio.current_task()
        try:
            await asyncio.sleep_ms(ms)
        finally:
            ev[0] = None
    was = ev[1]
    ev[1] = False
    return was


def rouse(ev):
    """Set ev, like Event.set(): the task dozing on it runs now. That task sleeps in
    asyncio.sleep_ms, so it is on the run queue for later: brought forward the way
    Task.cancel() brings a sleeping task forward (remove, push for now)."""
    ev[1] = True
    t = ev[0]
    if t is not None:
        ev[0] = None
        q = asyncio.core._task_queue  # type: ignore[attr-defined]
        q.remove(t)
        q.push(t)


# --- client -------------------------------------------------------------------------------
class _Exchange:
    def __init__(self, mid, token, obs):
        self.mid = mid
        self.token = token
        self.obs = obs
        self.acked = False
        self.rst = False
        self.resp = None
        self.ev = [None, False]  # see doze()


class Observation:
    def __init__(self, client, path, query, callback):
        self.client = client
        self.path = path
        self.query = query
        self.callback = callback
        self.token = os.urandom(client.token_len)
        self.seq = None
        self.t = self.due = ticks_ms()  # due: ticks when silence triggers re-registration
        self.active = True
        self.registering = False
        self.registrations = 0
        self.partial = None  # block 0 of a notification whose other blocks are being fetched

    def _deliver(self, m, first=False):
        now = ticks_ms()
        seq = m.observe
        if seq is not None and not first and self.seq is not None:
            if not fresher(self.seq, seq, self.t, now):
                self.client.stale += 1
                return
        if seq is not None:
            self.seq, self.t = seq, now
            self.due = ticks_add(now, (m.max_age + self.client.obs_margin) * 1000)
        else:
            # the server ended the observation (or never had one): register again soon
            self.due = ticks_add(now, self.client.obs_margin * 1000)
            if not m.ok:
                self.active = False  # an error ends it for good
        self.partial = None  # anything still being completed is older than m
        blk = m.block2 if m.code == CONTENT else None
        if blk is not None and blk[1]:
            # block 0 of a larger representation: GET the rest, then hand it over whole
            self.partial = m
            asyncio.create_task(self._complete(m))
            return
        self.callback(m)

    async def _complete(self, m):
        try:
            r = await self.client.request(GET, self.path, query=self.query, _first=m)
        except (CoapError, MemoryError):  # e.g. the ETag changed between blocks: a fresh block 0 is due
            r = None
        if self.partial is not m or not self.active:
            return  # a fresher notification came meanwhile, or we were cancelled
        self.partial = None
        if r is None:
            self.due = ticks_add(ticks_ms(), self.client.obs_margin * 1000)  # register again soon
        else:
            self.callback(r)

    async def cancel(self, deregister=True):
        """Stop; deregister with GET Observe=1, or just answer the next notification with RST."""
        self.active = False
        c = self.client
        if self in c._obs:
            c._obs.remove(self)
        if not deregister:
            return
        try:
            await c.request(GET, self.path, query=self.query, observe=1, _token=self.token)
        except CoapError:
            pass


class Client:
    def __init__(self, transport, ack_timeout=2.0, ack_random_factor=1.5, max_retransmit=4,
                 response_timeout=30.0, block_size=512, token_len=4, obs_margin=5):
        self.transport = transport
        self.ack_timeout = ack_timeout
        self.ack_random_factor = ack_random_factor
        self.max_retransmit = max_retransmit
        self.response_timeout = response_timeout
        self.szx = 0
        while self.szx < 6 and (32 << self.szx) <= block_size:
            self.szx += 1  # largest 16 << szx not above block_size
        self.token_len = max(4, min(8, token_len))
        self.obs_margin = obs_margin
        # room for a full block plus header/options; a datagram that fills it may be truncated
        self._buf = bytearray((16 << self.szx) + 160)
        self._mid = int.from_bytes(os.urandom(2), "big")
        self._pending = []
        self._queue = []  # the evs of exchanges waiting for their turn (see _exchange)
        self._obs = []
        self._seen = [-1] * 8  # recent (mid << 2 | reply type) of received CON/NON
        self._seen_i = 0
        self._tasks = None
        self.rx = self.bad = self.dup = self.retx = self.stale = self.rst_sent = 0

    # -- plumbing --

    def close(self):
        if self._tasks:
            for t in self._tasks:
                t.cancel()
            self._tasks = None
        self.transport.close()

    def _send(self, buf):
        try:
            self.transport.send(buf)
        except OSError:
            pass  # the network may come back; retransmission covers it

    def _reply(self, mtype, mid):
        self._send(encode(mtype, 0, mid))
        if mtype == _RST:
            self.rst_sent += 1

    async def _rx_loop(self):
        buf = self._buf
        mv = memoryview(buf)
        while True:
            try:
                n = await self.transport.recv_into(buf)
            except (OSError, MemoryError):  # a full heap may be transient: keep receiving
                await asyncio.sleep_ms(20)
                continue
            self.rx += 1
            if not n or n >= len(buf):
                self.bad += 1  # empty or possibly truncated
                continue
            try:
                m = decode(mv, n)
            except Exception:
                self.bad += 1
                continue
            try:
                self._dispatch(m)
            except Exception:
                self.bad += 1

    def _find(self, mid=None, token=None):
        for ex in self._pending:
            if (mid is not None and ex.mid == mid) or (token is not None and ex.token == token):
                return ex
        return None

    def _resolve(self, ex, m):
        ex.resp = m
        if ex.obs is not None and ex.obs.active:
            # hand the registration response over here, so no notification overtakes it
            ex.obs.registrations += 1
            ex.obs._deliver(m, first=True)

    def _dispatch(self, m):
        t = m.type
        if t == ACK or t == _RST:
            ex = self._find(mid=m.mid)
            if ex is None or ex.resp is not None:
                return  # late or duplicate ACK
            if t == _RST:
                ex.rst = True
            elif m.code == 0:
                ex.acked = True
            elif m.token == ex.token and m.code >= 64:
                self._resolve(ex, m)
            else:
                self.bad += 1
                return
            rouse(ex.ev)
            return
        # CON or NON: we are only a client, so this must be a (separate) response or notification
        if m.code < 64 or m.code >= 192:
            self.bad += 1
            if t == CON:
                self._reply(_RST, m.mid)
            return
        key = m.mid << 2
        for s in self._seen:
            if s >> 2 == m.mid:
                self.dup += 1
                if t == CON:
                    self._reply(s & 3, m.mid)  # repeat what we answered the first time
                return
        reply = ACK
        ex = self._find(token=m.token)
        if ex is not None and ex.resp is None:
            self._resolve(ex, m)
            rouse(ex.ev)
        else:
            for o in self._obs:
                if o.token == m.token and o.active:
                    o._deliver(m)
                    break
            else:
                reply = _RST  # nobody wants it (e.g. a cancelled observation)
        self._seen[self._seen_i] = key | reply
        self._seen_i = (self._seen_i + 1) & 7
        if t == CON or reply == _RST:
            self._reply(reply, m.mid)

    async def _exchange(self, buf, mid, token, confirmable, obs=None):
        # NSTART = 1 (RFC 7252 4.7): one exchange in flight; the others wait their turn, in
        # order. Congestion control, and the transients of one exchange at a time in RAM.
        q = self._queue
        if self._pending or q:
            ev = [None, False]
            q.append(ev)
            ok = False
            try:
                while self._pending or q[0] is not ev:
                    await doze(ev, 1000)  # roused when an exchange ends (and checks each second)
                ok = True
            finally:
                for i in range(len(q)):
                    if q[i] is ev:
                        del q[i]
                        break
                if not ok and q and not self._pending:
                    rouse(q[0])  # cancelled while waiting: the next one may go
        ex = _Exchange(mid, token, obs)
        self._pending.append(ex)
        try:
            self._send(buf)
            r = os.urandom(1)[0] / 255
            timeout = self.ack_timeout * (1 + r * (self.ack_random_factor - 1))
            tries = 0
            while ex.resp is None:
                if ex.rst:
                    raise CoapReset()
                if confirmable and not ex.acked:
                    if await doze(ex.ev, int(timeout * 1000)) or ex.resp or ex.acked or ex.rst:
                        continue
                    if tries >= self.max_retransmit:
                        raise CoapTimeout()
                    tries += 1
                    timeout *= 2  # exponential backoff
                    self.retx += 1
                    self._send(buf)
                elif not await doze(ex.ev, int(self.response_timeout * 1000)) and ex.resp is None:
                    raise CoapTimeout()  # NON lost, or the separate response never came
            return ex.resp
        finally:
            self._pending.remove(ex)
            if q:
                rouse(q[0])

    # -- public API --
    async def request(self, method, path, payload=b"", query=None, content_format=None, etag=None,
                      accept=None, observe=None, confirmable=True, sink=None, _token=None, _obs=None,
                      _first=None):
        """Send a request and return the response Message (CoapTimeout/CoapReset on failure).

        A GET proposes the client's block size (Block2, block 0). A Block2 body is fetched
        whole into a bytearray payload, or, with sink, passed block by block to sink(bytes)
        and not kept (for blobs on small heaps). Every block must carry the first block's
        ETag. With _first (block 0 of a notification), only the later blocks are fetched.
        An Observe registration (_obs) returns its first response as it came: the
        Observation completes it.
        """
        if self._tasks is None:  # the receive and watch loops start with the first request
            self._tasks = (asyncio.create_task(self._rx_loop()), asyncio.create_task(self._watch_loop()))
        if isinstance(payload, str):
            payload = payload.encode()
        base = split_uri(path, query)
        if content_format is not None:
            base.append((_CONTENT_FORMAT, uint(content_format)))
        if etag is not None:
            base.append((ETAG, etag))
        if accept is not None:
            base.append((_ACCEPT, uint(accept)))
        if observe is not None:
            base.append((OBSERVE, uint(observe)))
        mtype = CON if confirmable else NON
        token = _token or os.urandom(self.token_len)
        num, szx = 0, self.szx
        body = None
        first = _first
        if first is not None:
            bnum, _, szx = first.block2
            num = bnum + 1
            token = os.urandom(self.token_len)
            if sink is not None:
                sink(first.payload)
            else:
                body = bytearray(first.payload)
        while True:
            opts = base
            if num:  # later blocks go without Observe (RFC 7959 2.6)
                opts = [o for o in base if o[0] != OBSERVE]
            if method == GET:
                opts = opts + [(BLOCK2, uint(block_encode(num, False, szx)))]  # early size negotiation
            mid = self._mid = (self._mid + 1) & 0xFFFF
            buf = encode(mtype, method, mid, token, opts, payload)
            resp = await self._exchange(buf, mid, token, mtype == CON, None if num else _obs)
            buf = opts = None
            if _obs is not None:
                return resp
            blk = resp.block2 if resp.ok else None
            if blk is None:
                if first is None:
                    if sink is not None and resp.payload:
                        sink(resp.payload)
                        resp.payload = b""  # passed on, not kept
                    return resp
                raise CoapError("block2 missing")
            bnum, more, bszx = blk
            if first is None:
                first = resp
                if sink is None:
                    body = bytearray()
            elif resp.etag != first.etag:
                raise CoapError("etag changed")  # the resource changed under us
            if (bnum << (bszx + 4)) != (num << (szx + 4)) or bszx > szx:
                raise CoapError("block order")
            if sink is not None:
                sink(resp.payload)
                resp.payload = b""  # passed on, not kept (first holds block 0 to the end)
            elif body is not None:
                gc.collect()  # frees this exchange's garbage so the body can grow in place
                body += resp.payload
            if not more:
                break
            szx = bszx  # adopt the server's (smaller or equal) size
            num = bnum + 1
            token = os.urandom(self.token_len)
        first.payload = b"" if body is None else body  # a bytearray: no second copy
        first.opts = [o for o in first.opts if o[0] != BLOCK2]
        body = None
        gc.collect()  # a blob transfer just ended: a quiet point
        return first

    async def get(self, path, **kw):
        return await self.request(GET, path, **kw)

    async def post(self, path, payload=b"", **kw):
        return await self.request(POST, path, payload, **kw)

    async def observe(self, path, callback, query=None):
        """Register; callback(resp) runs for the first response and every fresh notification.

        callback must be quick and must not block: it runs in the receive loop.
        """
        o = Observation(self, path, query, callback)
        self._obs.append(o)
        await self._register(o)
        return o

    async def _register(self, o):
        o.registering = True
        try:
            await self.request(GET, o.path, query=o.query, observe=0, _token=o.token, _obs=o)
        except CoapError:
            o.due = ticks_add(ticks_ms(), self.obs_margin * 1000)  # try again later
        finally:
            o.registering = False

    async def _watch_loop(self):
        i = 0
        while True:
            await asyncio.sleep_ms(250)
            now = ticks_ms()
            for o in self._obs:
                if o.active and not o.registering and ticks_diff(now, o.due) >= 0:
                    asyncio.create_task(self._register(o))  # silent too long: register again
            i += 1
            if not self._pending and not i & 7:
                gc.collect()  # idle: a quiet point, every 2 s
