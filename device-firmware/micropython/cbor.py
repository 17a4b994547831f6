# cbor.py - a small CBOR (RFC 8949) codec for the fleetlet firmware.
#
# Runs on MicroPython >= 1.22 and on CPython. Encoding is "core deterministic"
# (RFC 8949 4.2.1): shortest heads and floats, definite lengths, map keys sorted by
# their encoded bytes. The decoder accepts any well-formed CBOR, including
# indefinite lengths, and raises CBORError (a ValueError) on anything else.
#
# Types: int (bignum tags 2/3 beyond 64 bits), float, str, bytes, list (tuples
# encode as arrays), dict, bool, None, Tag, Simple (undefined is UNDEFINED).
# Tags, simple values, bignums, half floats and indefinite-length strings are handled
# in cbor_ext.py, imported on first use only (Tag, Simple, UNDEFINED are found here too).
#
# Memory: dumps() appends to a caller-supplied bytearray so one buffer can be
# reused for every report; loads() reads through a memoryview without copying
# the payload, and copies only the strings and byte strings it returns.

import struct

try:
    from micropython import const
except ImportError:  # CPython, for tests and tools: const() is the identity there
    TYPE_CHECKING = False
    if not TYPE_CHECKING:  # not a redefinition for mypy, which checks the MicroPython stubs

        def const(expr):
            return expr


MAX_DEPTH = const(16)  # nesting limit: recursion uses the C stack on a board
_U64 = const(0xFFFFFFFFFFFFFFFF)


class CBORError(ValueError):
    pass


def __getattr__(name):
    # Tag, Simple and UNDEFINED live in cbor_ext.py with the other rarely used parts: loaded
    # on first use (a firmware that never meets a tag or simple value never loads them)
    if name == "Tag" or name == "Simple" or name == "UNDEFINED":
        import cbor_ext

        return getattr(cbor_ext, name)
    raise AttributeError(name)


# ---------------------------------------------------------------- encoder


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(struct.pack(">I", n))
    else:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", n))


def _half_bits(b):
    # Half-precision bits for the single-precision value in b, or -1 if the half
    # cannot hold it exactly. Done by hand: struct's "e" is not in every port.
    bits = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
    sign = (bits >> 16) & 0x8000
    exp = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    if exp == 0xFF:
        return sign | 0x7C00 if mant == 0 else -1
    if exp == 0:
        return sign if mant == 0 else -1  # single subnormals are below half range
    e = exp - 127
    if -14 <= e <= 15:
        return -1 if mant & 0x1FFF else sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:  # half subnormal
        full = mant | 0x800000
        shift = -1 - e
        return -1 if full & ((1 << shift) - 1) else sign | (full >> shift)
    return -1


def _float(out, f):
    if f != f:
        out.extend(b"\xf9\x7e\x00")  # canonical NaN
        return
    try:
        b = struct.pack(">f", f)
        single = struct.unpack(">f", b)[0] == f
    except OverflowError:  # CPython refuses to round to single; MicroPython gives inf
        single = False
    if not single:
        out.append(0xFB)
        out.extend(struct.pack(">d", f))
        return
    h = _half_bits(b)
    if h >= 0:
        out.append(0xF9)
        out.append(h >> 8)
        out.append(h & 0xFF)
    else:
        out.append(0xFA)
        out.extend(b)


def _map(out, d, depth):
    _head(out, 5, len(d))
    plain = True  # all keys unsigned ints: numeric order is the encoded order
    for k in d:
        if type(k) is not int or k < 0:
            plain = False
            break
    if plain:
        for k in sorted(d):
            _enc(out, k, depth)
            _enc(out, d[k], depth)
        return
    items = []
    for k in d:
        kb = bytearray()
        _enc(kb, k, depth)
        items.append((bytes(kb), k))
    items.sort()
    for key, k in items:
        out.extend(key)
        _enc(out, d[k], depth)


def _enc(out, v, depth):
    t = type(v)
    if t is bool:  # before int: CPython's bool is an int
        out.append(0xF5 if v else 0xF4)
    elif t is int:
        if v < 0:
            v = -1 - v
            major = 1
        else:
            major = 0
        if v <= _U64:
            _head(out, major, v)
        else:
            import cbor_ext

            cbor_ext.bignum(out, 2 + major, v)
    elif t is str:
        b = v.encode()
        _head(out, 3, len(b))
        out.extend(b)
    elif t is bytes or t is bytearray or t is memoryview:
        _head(out, 2, len(v))
        out.extend(v)
    elif v is None:
        out.append(0xF6)
    elif t is float:
        _float(out, v)
    else:
        if depth >= MAX_DEPTH:
            raise CBORError("nesting too deep")
        depth += 1
        if t is list or t is tuple:
            _head(out, 4, len(v))
            for x in v:
                _enc(out, x, depth)
        elif t is dict:
            _map(out, v, depth)
        else:
            import cbor_ext

            cbor_ext.enc(out, v, t, depth)  # Tag, Simple, or CBORError


def dumps(obj, out=None):
    """Encode obj; append to bytearray `out` (cleared first) or to a new one. Returns it."""
    if out is None:
        out = bytearray()
    else:
        out[:] = b""
    _enc(out, obj, 0)
    return out


# ---------------------------------------------------------------- decoder

# Decoder state lives in module globals, not in returned tuples, to avoid one
# allocation per item; loads() is not re-entrant (the firmware is single-threaded).
_buf = b""  # type: bytes | memoryview
_pos = 0


def _take(n):
    global _pos
    p = _pos
    if n > len(_buf) - p:
        raise CBORError("truncated at byte %d" % p)
    _pos = p + n
    return p


def _arg(ai):
    if ai < 24:
        return ai
    if ai == 24:
        return _buf[_take(1)]
    if ai == 25:
        p = _take(2)
        return (_buf[p] << 8) | _buf[p + 1]
    if ai == 26:
        p = _take(4)
        return int.from_bytes(_buf[p : p + 4], "big")
    if ai == 27:
        p = _take(8)
        return int.from_bytes(_buf[p : p + 8], "big")
    raise CBORError("bad additional info %d" % ai)


def _brk():
    # True (and consumed) if the next byte is the "break" stop code.
    global _pos
    if _pos >= len(_buf):
        raise CBORError("truncated: missing break")
    if _buf[_pos] == 0xFF:
        _pos += 1
        return True
    return False


def _text(b):
    try:
        return str(b, "utf-8")
    except UnicodeError:
        raise CBORError("invalid UTF-8 in text string")


def _pair(d, depth):
    k = _item(depth)
    try:
        hash(k)  # explicit: `k in d` does not hash when d is empty
    except TypeError:  # a list or dict as key
        raise CBORError("unhashable map key")
    if k in d:
        raise CBORError("duplicate map key %r" % (k,))
    d[k] = _item(depth)


def _item(depth):
    ib = _buf[_take(1)]
    mt = ib >> 5
    ai = ib & 31
    if mt == 0:
        return _arg(ai)
    if mt == 1:
        return -1 - _arg(ai)
    if mt == 2 or mt == 3:
        if ai == 31:
            import cbor_ext

            b = cbor_ext.chunks(mt)
            return bytes(b) if mt == 2 else _text(b)
        n = _arg(ai)
        p = _take(n)
        return bytes(_buf[p : p + n]) if mt == 2 else _text(_buf[p : p + n])
    if mt == 7:
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai < 26:  # simple values, undefined and half floats: rarely met
            import cbor_ext

            return cbor_ext.simple(ai)
        if ai == 26:
            return struct.unpack_from(">f", _buf, _take(4))[0]
        if ai == 27:
            return struct.unpack_from(">d", _buf, _take(8))[0]
        raise CBORError("unexpected break" if ai == 31 else "bad additional info %d" % ai)
    if depth <= 0:
        raise CBORError("nesting too deep")
    depth -= 1
    if mt == 4:
        lst = []
        if ai == 31:
            while not _brk():
                lst.append(_item(depth))
            return lst
        n = _arg(ai)
        if n > len(_buf) - _pos:  # every item takes a byte: refuse absurd lengths early
            raise CBORError("truncated array")
        for _ in range(n):
            lst.append(_item(depth))
        return lst
    if mt == 5:
        d = {}  # type: dict
        if ai == 31:
            while not _brk():
                _pair(d, depth)
            return d
        n = _arg(ai)
        if n > len(_buf) - _pos:
            raise CBORError("truncated map")
        for _ in range(n):
            _pair(d, depth)
        return d
    # mt == 6: tag
    t = _arg(ai)
    v = _item(depth)
    if (t == 2 or t == 3) and type(v) is bytes:
        n = int.from_bytes(v, "big")
        return n if t == 2 else -1 - n
    import cbor_ext

    return cbor_ext.Tag(t, v)


def loads(data):
    """Decode one CBOR item that must fill `data` exactly."""
    global _buf, _pos
    _buf = memoryview(data)
    _pos = 0
    try:
        v = _item(MAX_DEPTH)
        if _pos != len(_buf):
            raise CBORError("%d trailing bytes" % (len(_buf) - _pos))
        return v
    finally:
        _buf = b""  # drop the view so the payload can be collected
