# cbor.py - a small CBOR (RFC 8949) codec for the fleetlet firmware.
#
# Runs on MicroPython >= 1.22 and on CPython. Encoding is "core deterministic"
# (RFC 8949 4.2.1): shortest heads and floats, definite lengths, map keys sorted by
# their encoded bytes. The decoder accepts any well-formed CBOR, including
# indefinite lengths, and raises CBORError (a ValueError) on anything else.
#
# Types: int (bignum tags 2/3 beyond 64 bits), float, str, bytes, list (tuples
# encode as arrays), dict, bool, None, Tag, Simple (undefined is UNDEFINED).
# The encoder is what a device uses all the time (reports, logs); the decoder is in
# cbor_dec.py (cbor.loads imports it) and tags, simple values and bignums in cbor_ext.py
# (cbor.Tag, cbor.Simple, cbor.UNDEFINED lead there), both imported on first use only.
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


def loads(data):
    """Decode one CBOR item that must fill `data` exactly (CBORError on anything else).

    The decoder is cbor_dec.py, imported on the first call: a device decodes only around a
    registration, a new desired document and an app's start, and can drop cbor_dec from
    sys.modules after those (agent.py and supervisor.py do)."""
    import cbor_dec

    return cbor_dec.loads(data)
