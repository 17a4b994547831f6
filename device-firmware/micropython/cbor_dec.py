# cbor_dec.py - cbor.loads(): the CBOR decoder.
#
# cbor.py imports this module on the first cbor.loads(), so the encoder alone stays in RAM
# between uses: a device decodes only around a registration, a new desired document and an
# app's start, and agent.py and supervisor.py drop this module again after those. Tags and
# simple values come from cbor_ext.py.

import struct

from cbor import CBORError, MAX_DEPTH

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


def _unhalf(h):
    e = (h >> 10) & 31
    m = h & 1023
    if e == 0:
        v = m / 16777216.0  # m * 2**-24, exact
    elif e == 31:
        v = float("inf") if m == 0 else float("nan")
    else:
        v = (m + 1024) * 2.0 ** (e - 25)
    return -v if h & 0x8000 else v


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
        if ai == 31:  # indefinite length: definite chunks of the same major type, then break
            b = bytearray()
            while not _brk():
                ib = _buf[_take(1)]
                if ib >> 5 != mt or ib & 31 == 31:
                    raise CBORError("bad chunk in indefinite string")
                n = _arg(ib & 31)
                p = _take(n)
                b.extend(_buf[p : p + n])
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
        if ai < 20 or ai == 23 or ai == 24:  # simple values (23: undefined)
            import cbor_ext

            if ai == 23:
                return cbor_ext.UNDEFINED
            if ai == 24:
                ai = _buf[_take(1)]
                if ai < 32:
                    raise CBORError("simple value %d in two bytes" % ai)
            return cbor_ext.Simple(ai)
        if ai == 25:
            p = _take(2)
            return _unhalf((_buf[p] << 8) | _buf[p + 1])
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
    """cbor.loads(): decode one CBOR item that must fill `data` exactly."""
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
