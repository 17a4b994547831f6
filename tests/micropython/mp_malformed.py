# Runs under MicroPython: malformed input must raise cbor.CBORError and nothing else,
# and the encoder must be deterministic. Prints PASS/FAIL lines like mp_vectors.py.
# usage: micropython mp_malformed.py <firmware_dir> <vector.json>...
# MicroPython code: %-formatting is the idiom there.
# ruff: noqa: UP031
import binascii
import gc
import json
import sys

sys.path.insert(0, sys.argv[1])
import cbor
import wire

READERS = {"desired": wire.read_desired, "registered": wire.read_registered}

MALFORMED = [
    ("empty", ""),
    ("truncated-uint", "19 01"),
    ("truncated-map", "a2 00 01"),
    ("truncated-bytes", "44 01 02"),
    ("huge-length", "5b ffffffffffffffff"),
    ("huge-array", "9b 00000000ffffffff 00"),
    ("reserved-ai", "1c"),
    ("lone-break", "ff"),
    ("two-byte-simple", "f8 18"),
    ("trailing", "00 00"),
    ("duplicate-key", "a2 01 02 01 03"),
    ("unhashable-key", "a1 80 00"),
    ("bad-utf8", "62 c3 28"),
    ("bad-chunk", "5f 61 61 ff"),
    ("nested-chunk", "5f 5f ff ff"),
    ("unterminated-indef", "9f 01 02"),
    ("deep", "81" * 40 + "00"),
]

# Deterministic encoding (RFC 8949 4.2.1); expected bytes cross-checked with cbor2.
ENCODE = [
    ("key-order", {"a": 0, -1: 0, 1000: 0, 100: 0, 5: 0}, "a5050018640019" + "03e8002000616100"),
    ("text-keys", {"bb": 1, "a": 2, "c": 3}, "a3616102616303626262" + "01"),
    ("half", 1.5, "f93e00"),
    ("half-subnormal", 5.960464477539063e-08, "f90001"),
    ("single", 100000.0, "fa47c35000"),
    ("double", 0.1, "fb3fb999999999999a"),
    ("neg-zero", -0.0, "f98000"),
    ("nan", float("nan"), "f97e00"),
    ("inf", float("-inf"), "f9fc00"),
    ("bignum", 2**64, "c249010000000000000000"),
    ("neg-bignum", -(2**64) - 1, "c349010000000000000000"),
    ("tuple", (1, "x"), "82016178"),
    ("bytearray", bytearray(b"\x01"), "4101"),
]


def unhex(h):
    return binascii.unhexlify(h.replace(" ", ""))


def expect_error(ident, data):
    try:
        v = cbor.loads(data)
        print("FAIL %s decoded %r" % (ident, v))
    except cbor.CBORError:
        print("PASS " + ident)
    except Exception as e:  # any other exception would crash the firmware's loop
        print("FAIL %s raised %s: %s" % (ident, type(e).__name__, e))


for name, h in MALFORMED:
    expect_error("malformed/" + name, unhex(h))

buf = bytearray(8)
for name, value, h in ENCODE:
    got = binascii.hexlify(cbor.dumps(value, buf)).decode()
    print(("PASS enc/" + name) if got == h else ("FAIL enc/%s %s" % (name, got)))

try:
    cbor.dumps({1: object()})
    print("FAIL enc/unsupported accepted")
except cbor.CBORError:
    print("PASS enc/unsupported")

# Every truncation and every single-byte corruption of every wire vector: decoding
# either succeeds or raises CBORError; wire.py's readers raise only WireError.
for path in sys.argv[2:]:
    with open(path) as f:
        doc = json.load(f)
    for v in doc["vectors"]:
        data = bytearray(unhex(v["hex"]))
        ident = "fuzz/%s/%s" % (doc["type"], v["name"])
        reader = READERS.get(doc["type"])
        bad = 0
        for i in range(len(data)):
            for candidate in (data[:i], None):
                if candidate is None:
                    old = data[i]
                    data[i] = old ^ 0xA5
                    candidate = data
                try:
                    cbor.loads(candidate)
                    if reader:
                        reader(candidate)
                except (cbor.CBORError, wire.WireError):
                    pass
                except Exception as e:
                    bad += 1
                    if bad < 3:
                        print("FAIL %s at %d: %s %s" % (ident, i, type(e).__name__, e))
                if candidate is data:
                    data[i] = old
        if not bad:
            print("PASS " + ident)
    del doc
    gc.collect()
print("DONE")
