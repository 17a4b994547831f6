# No network: codec, dedup, Observe ordering and RST/ACK replies, on the real interpreter.
import binascii
import json

import coap


class FakeTransport:
    def __init__(self):
        self.sent = []

    def send(self, buf):
        self.sent.append(coap.decode(buf))

    def close(self):
        pass


def hexs(b):
    return binascii.hexlify(b).decode()


out = {}
# encodings that the host test compares with aiocoap's
out["vectors"] = [
    hexs(coap.encode(coap.CON, coap.GET, 0x1234, b"\x01\x02\x03\x04", coap.split_uri("/d/esp-1/desired"))),
    hexs(coap.encode(coap.CON, coap.POST, 7, b"tok", coap.split_uri("/rd?ep=esp-1&lt=300"), b"\xa1\x00\x01")),
    hexs(
        coap.encode(
            coap.NON,
            coap.GET,
            0xFFFF,
            b"",
            [
                (coap.BLOCK2, coap.uint(0x123)),
                (2000, b"x" * 300),
                (coap.ETAG, b"\xde\xad"),
                (coap.OBSERVE, b""),
            ],
        )
    ),
    hexs(
        coap.encode(
            coap.ACK, 0x45, 1, b"12345678", [(coap.URI_PATH, b"a" * 13), (coap.URI_PATH, b"b" * 269)], b"p"
        )
    ),
]

# malformed input: only ValueError, never anything else
bad = [
    b"",
    b"\x40",
    b"\x49\x45\x00\x01",
    b"\x40\x45\x00\x01\xff",
    b"\x40\x45\x00\x01\xf1\x00",
    b"\x40\x45\x00\x01\xe1\x00",
    b"\x40\x45\x00\x01\x1d",
    b"\x60\x00\x00\x01\x01",
]
errs = []
for b in bad:
    try:
        coap.decode(b)
        errs.append("accepted")
    except ValueError:
        errs.append("ValueError")
    except Exception as e:
        errs.append(repr(e))
out["malformed"] = errs

# Observe: 24-bit sequence rule (RFC 7641 3.4)
t = FakeTransport()
c = coap.Client(t)
got = []
o = coap.Observation(c, "/obs", None, lambda m: got.append(m.observe))
c._obs.append(o)


def notif(mid, seq, mtype=coap.CON, token=None):
    return coap.Message(mtype, 0x45, mid, token or o.token, [(coap.OBSERVE, coap.uint(seq))], b"v")


o._deliver(notif(1, 0xFFFFF0), first=True)
for mid, seq in ((2, 0xFFFFF2), (3, 0xFFFFF1), (4, 3), (5, 2), (6, 4)):
    c._dispatch(notif(mid, seq))
c._dispatch(notif(6, 4))  # a retransmission: deduplicated, ACKed again
c._dispatch(notif(9, 5, token=b"nobody"))  # unknown token: RST
out["order"] = got
out["stale"] = c.stale
out["dup"] = c.dup
out["replies"] = [[m.type, m.mid, m.code] for m in t.sent]
# a NON notification is delivered but not ACKed
c._dispatch(notif(10, 6, mtype=coap.NON))
out["non"] = [got[-1], len(t.sent)]
print("RESULT " + json.dumps(out))
