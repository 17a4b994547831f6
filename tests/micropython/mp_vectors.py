# Runs under MicroPython (not pytest): checks the firmware's cbor.py and wire.py
# against RFC 8949 Appendix A and the wire vectors, printing one line per check:
#   PASS <id> | FAIL <id> <why> | SKIP <id> <why>
# usage: micropython mp_vectors.py <firmware_dir> <appendix-a.json> <vector.json>...
# MicroPython code: zip() has no strict=, and %-formatting is the idiom there.
# ruff: noqa: B905, UP031
import binascii
import gc
import json
import sys

sys.path.insert(0, sys.argv[1])
# cbor.loads() imports cbor_dec on first use: compiled from source only then, with the
# vectors in RAM, it would not fit the 64 KiB heap, so it is imported here.
import cbor
import cbor_dec  # noqa: F401
import wire

INF = float("inf")
T = cbor.Tag
S = cbor.Simple

# Appendix A items given only in diagnostic notation, as MicroPython values.
DIAG = {
    "Infinity": INF,
    "-Infinity": -INF,
    "NaN": float("nan"),
    "undefined": cbor.UNDEFINED,
    "simple(16)": S(16),
    "simple(24)": S(24),
    "simple(255)": S(255),
    '0("2013-03-21T20:04:00Z")': T(0, "2013-03-21T20:04:00Z"),
    "1(1363896240)": T(1, 1363896240),
    "1(1363896240.5)": T(1, 1363896240.5),
    "23(h'01020304')": T(23, b"\x01\x02\x03\x04"),
    "24(h'6449455446')": T(24, b"dIETF"),
    '32("http://www.example.com")': T(32, "http://www.example.com"),
    "h''": b"",
    "h'01020304'": b"\x01\x02\x03\x04",
    "{1: 2, 3: 4}": {1: 2, 3: 4},
    "(_ h'0102', h'030405')": b"\x01\x02\x03\x04\x05",
}

# MicroPython's json does not join UTF-16 surrogate pairs ("\ud800\udd51"), so the
# expected value of this item cannot be loaded; its byte-exact round trip still runs.
SKIP_VALUE = {"64f0908591": "json: surrogate pair in expected value"}

# RFC 8949 section 3.3 made f8 followed by a byte < 0x20 not well-formed; the item
# comes from RFC 7049's table. cbor2 rejects it too.
MUST_REJECT = {"f818"}


def same(a, b):
    # Strict equality: 1 != 1.0 and 0.0 != -0.0 here, unlike ==.
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if a != a:
            return b != b
        return a == b and (a != 0 or repr(a) == repr(b))
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(k in b and same(a[k], b[k]) for k in a)
    return a == b


def untag(o):
    if type(o) is list:
        return [untag(x) for x in o]
    if type(o) is dict:
        if len(o) == 1:
            k = next(iter(o))
            if k == "$map":
                return {untag(kv[0]): untag(kv[1]) for kv in o[k]}
            if k == "$bytes":
                return binascii.unhexlify(o[k])
            if k == "$float":
                return float(o[k])
        return {k: untag(v) for k, v in o.items()}
    return o


def hexs(b):
    return binascii.hexlify(b).decode()


def tagged(o):
    # A decoded value in the vectors' tagged JSON form, for the test to compare with CPython.
    t = type(o)
    if t is dict:
        return {"$map": [[tagged(k), tagged(x)] for k, x in o.items()]}
    if t is list:
        return [tagged(x) for x in o]
    if t is bytes:
        return {"$bytes": hexs(o)}
    if t is float and (o != o or o in (INF, -INF)):
        return {"$float": repr(o)}
    return o


def check(ident, ok, why=""):
    print(("PASS " + ident) if ok else ("FAIL %s %s" % (ident, why)))


def guarded(ident, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # a crash is a failure of that check, not of the run
        print("FAIL %s %s: %s" % (ident, type(e).__name__, e))


def appendix_item(it, buf):
    h = it["hex"]
    data = binascii.unhexlify(h)
    ident = "a/" + h
    if h in MUST_REJECT:
        try:
            cbor.loads(data)
            check(ident + "/rejected", False, "accepted")
        except cbor.CBORError:
            check(ident + "/rejected", True)
        return
    got = cbor.loads(data)
    if h in SKIP_VALUE:
        print("SKIP %s/decode %s" % (ident, SKIP_VALUE[h]))
    elif "decoded" in it:
        want = it["decoded"]
        check(ident + "/decode", same(got, want), "got %r want %r" % (got, want))
    elif it["diagnostic"] in DIAG:
        want = DIAG[it["diagnostic"]]
        check(ident + "/decode", same(got, want), "got %r want %r" % (got, want))
    else:
        print("SKIP %s/decode no value for %s" % (ident, it["diagnostic"]))
    if it["roundtrip"]:
        enc = hexs(cbor.dumps(got, buf))
        check(ident + "/roundtrip", enc == h, "encoded " + enc)


def appendix(path):
    with open(path) as f:
        items = json.load(f)
    buf = bytearray()  # reused by every encode, as the firmware does
    for it in items:
        guarded("a/" + it["hex"], appendix_item, it, buf)
    del items
    gc.collect()


def wire_helpers(kind, m, data, buf):
    # Build the same message through wire.py and compare bytes (or parse it back).
    g = m.get
    if kind == "hello":
        out = wire.hello(m[1], m[2], m[3], m[4], m[5], m[6], g(7), g(8), g(9), out=buf)
        return hexs(out) == hexs(data)
    if kind == "registered":
        return wire.read_registered(data) == (m[1], m[2], g(3))
    if kind == "desired":
        gen, wls = wire.read_desired(data)
        return gen == m[1] and same(wls, g(2, []))
    if kind == "report":
        sts = [
            wire.status(s[1], s[2], s[3], s.get(4, 0), s.get(5), s.get(6), s.get(7, False), s.get(8))
            for s in g(2, [])
        ]
        out = wire.report(m[1], sts, g(3), g(4), g(5), g(6), out=buf)
        return hexs(out) == hexs(data)
    if kind == "log_batch":
        out = wire.log_batch(m[1], m[3], g(2), g(4, 0), g(5, 0), out=buf)
        return hexs(out) == hexs(data)
    if kind == "blob_ref":
        return wire.blob_path(m) == "/b/" + hexs(m[1])
    return False


READERS = {"registered": wire.read_registered, "desired": wire.read_desired}


def vector_item(kind, v, buf):
    ident = "w/%s/%s" % (kind, v["name"])
    data = binascii.unhexlify(v["hex"])
    want = untag(v["decoded"])
    enc = hexs(cbor.dumps(want, buf))
    check(ident + "/encode", enc == v["hex"], "encoded " + enc)
    got = cbor.loads(data)
    check(ident + "/decode", same(got, want), "got %r" % (got,))
    check(ident + "/roundtrip", hexs(cbor.dumps(got, buf)) == v["hex"])
    if "sender" in v:
        # Sent by another device (the SBC agent's container statuses), so wire.py has no
        # builder for it: the generic codec above must still read and rewrite it, and the
        # test compares what it decoded with CPython's decoding.
        print("VALUE %s/value %s" % (ident, json.dumps(tagged(got))))
    else:
        check(ident + "/wire", wire_helpers(kind, want, data, buf))


def vectors_doc(doc):
    kind = doc["type"]
    buf = bytearray()
    for v in doc["vectors"]:
        gc.collect()  # each item from a clean heap
        guarded("w/%s/%s" % (kind, v["name"]), vector_item, kind, v, buf)
    for v in doc.get("invalid", ()):
        ident = "w/%s/invalid/%s" % (kind, v["name"])
        reader = READERS.get(kind)
        if reader is None:
            continue
        try:
            reader(binascii.unhexlify(v["hex"]))
            print("ACCEPT " + ident)
        except wire.WireError as e:
            print("REJECT %s %s" % (ident, e))


def vectors(path):
    # A .jsonl file holds one vector file's worth per line (one vector each, as the test
    # writes it): only one message and its expectations are in RAM at a time, as on a device.
    with open(path) as f:
        if path.endswith(".jsonl"):
            for line in f:
                if line.strip():
                    doc = json.loads(line)
                    vectors_doc(doc)
                    del doc
                    gc.collect()
            return
        doc = json.load(f)
    vectors_doc(doc)
    del doc
    gc.collect()


appendix(sys.argv[2])
for p in sys.argv[3:]:
    vectors(p)
gc.collect()
print("MEMFREE %d" % gc.mem_free())
print("DONE")
