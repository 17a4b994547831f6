# cbor_ext.py - CBOR's rarely met values: tags, simple values (undefined), bignums.
#
# Imported on first use only: by cbor.py's encoder when it meets one, by cbor_dec.py's
# decoder likewise, and for cbor.Tag, cbor.Simple and cbor.UNDEFINED. The wire protocol
# uses none of them, so a device normally never loads this module. (It is not dropped once
# loaded: Tag and Simple must stay the same classes.)

import cbor
from cbor import CBORError


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
        raise CBORError("cannot encode %s" % t.__name__)
