# cbor_ext.py - the rarely used parts of cbor.py: tags, simple values, bignums, half-float
# decoding and indefinite-length strings.
#
# cbor.py imports this module on first use only (cbor.Tag, cbor.Simple and cbor.UNDEFINED
# come from here too), so a firmware that never meets these keeps its code out of RAM.

import cbor


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __hash__(self):  # tags are valid map keys; unhashable content raises TypeError
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __hash__(self):
        return self.value

    def __repr__(self):
        return "Simple(%d)" % self.value


UNDEFINED = Simple(23)

# ---------------------------------------------------------------- encoder


def bignum(out, tag, n):
    size = 0
    m = n
    while m:
        m >>= 8
        size += 1
    cbor._head(out, 6, tag)
    cbor._head(out, 2, size)
    out.extend(n.to_bytes(size, "big"))


def enc(out, v, t, depth):
    # a value of type t that is none of cbor._enc's common types (depth already counted)
    if t is Tag:
        cbor._head(out, 6, v.tag)
        cbor._enc(out, v.value, depth)
    elif t is Simple:
        if v.value < 24:
            out.append(0xE0 | v.value)
        else:
            out.append(0xF8)
            out.append(v.value)
    else:
        raise cbor.CBORError("cannot encode %s" % t.__name__)


# ---------------------------------------------------------------- decoder (cbor's state)


def simple(ai):
    # major type 7 with additional info ai < 26, other than false, true and null
    if ai < 20:
        return Simple(ai)
    if ai == 23:
        return UNDEFINED
    if ai == 24:
        v = cbor._buf[cbor._take(1)]
        if v < 32:
            raise cbor.CBORError("simple value %d in two bytes" % v)
        return Simple(v)
    # ai == 25: half-precision float
    p = cbor._take(2)
    h = (cbor._buf[p] << 8) | cbor._buf[p + 1]
    e = (h >> 10) & 31
    m = h & 1023
    if e == 0:
        v = m / 16777216.0  # m * 2**-24, exact
    elif e == 31:
        v = float("inf") if m == 0 else float("nan")
    else:
        v = (m + 1024) * 2.0 ** (e - 25)
    return -v if h & 0x8000 else v


def chunks(mt):
    # Indefinite-length string: definite chunks of the same major type, then break.
    parts = bytearray()
    while not cbor._brk():
        ib = cbor._buf[cbor._take(1)]
        if ib >> 5 != mt or ib & 31 == 31:
            raise cbor.CBORError("bad chunk in indefinite string")
        n = cbor._arg(ib & 31)
        p = cbor._take(n)
        parts.extend(cbor._buf[p : p + n])
    return parts
