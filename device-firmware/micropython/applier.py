# applier.py - turn a desired document's workloads into app folders on flash.
#
# prepare() fetches only the blobs the store lacks, streaming each into blobs/<hex>.t
# while hashing it (no blob is ever held in RAM), checks size and SHA-256, and renames it
# into place. Then it builds each app folder apps/<key>.t from the blobs and renames it to
# apps/<key>. It returns the state record; the caller switches state.json (store.py says
# why a power cut at any point is safe).

import gc
import hashlib
import os
from binascii import hexlify
from micropython import const

import cbor
import store as st

# wire.py's numbers (a test checks they match): private, so they are folded and take no RAM
_WL_UID = const(1)
_WL_NAME = const(2)
_WL_GENERATION = const(3)
_WL_RUNTIME = const(4)
_WL_RESTART_POLICY = const(5)
_WL_ENTRY = const(6)
_WL_MODULES = const(7)
_WL_CONFIG = const(8)
_WL_SECRETS = const(9)
_BLOB_SHA256 = const(1)
_BLOB_SIZE = const(2)
_BLOB_NAME = const(3)

class ApplyError(ValueError):
    pass


def hexs(b):
    return hexlify(b).decode()


def app_key(w):
    """Names an app folder by everything in it: same content, same folder, no restart."""
    h = hashlib.sha256(cbor.dumps([
        w[_WL_UID], w[_WL_ENTRY], w.get(_WL_RESTART_POLICY, 0),
        w.get(_WL_MODULES) or [], w.get(_WL_CONFIG) or {}, w.get(_WL_SECRETS) or {},
    ]))
    return hexs(h.digest()[:10])


async def fetch_blob(client, root, ref):
    sha = ref[_BLOB_SHA256]
    hx = hexs(sha)
    tmp = st.blob(root, hx) + ".t"
    h = hashlib.sha256()
    n = [0]
    f = open(tmp, "wb")

    def sink(chunk):
        f.write(chunk)
        h.update(chunk)
        n[0] += len(chunk)

    try:
        r = await client.get("/b/" + hx, sink=sink)
    finally:
        f.close()
    try:
        if not r.ok:
            raise ApplyError("blob %s: %s" % (hx[:12], r.code_str()))
        if n[0] != ref[_BLOB_SIZE] or h.digest() != sha:
            raise ApplyError("blob %s: SHA-256 or size mismatch" % hx[:12])
    except ApplyError:
        os.remove(tmp)
        raise
    os.rename(tmp, st.blob(root, hx))


def build_app(root, w, key):
    d = st.app_dir(root, key)
    t = d + ".t"
    st.rmtree(t)
    os.mkdir(t)
    buf = bytearray(256)  # the copy buffer: here, not while blobs are fetched
    mv = memoryview(buf)
    for ref in w.get(_WL_MODULES) or ():
        name = ref[_BLOB_NAME]
        if not name or name[0] == "/" or name == "_c" or ".." in name or "\\" in name:
            raise ApplyError("bad module name %r" % name)
        p = t
        for part in name.split("/")[:-1]:  # "lib/util.py": make lib/
            p += "/" + part
            if not st.exists(p):
                os.mkdir(p)
        with open(st.blob(root, hexs(ref[_BLOB_SHA256])), "rb") as fi, open(t + "/" + name, "wb") as fo:
            while True:
                n = fi.readinto(buf)
                if not n:
                    break
                fo.write(mv[:n])
    with open(t + "/_c", "wb") as f:
        f.write(cbor.dumps([w.get(_WL_CONFIG) or {}, w.get(_WL_SECRETS) or {}]))
    os.rename(t, d)


async def prepare(client, root, gen, workloads, on_fetch=None):
    """-> (state record for gen, [(uid, generation, message)] of workloads not runnable here)."""
    apps, bad = [], []
    for w in workloads:
        uid, g = w[_WL_UID], w[_WL_GENERATION]
        if w[_WL_RUNTIME] != "micropython":
            bad.append((uid, g, "runtime %s is not supported here" % w[_WL_RUNTIME]))
            continue
        key = app_key(w)
        mods = w.get(_WL_MODULES) or ()
        if not st.exists(st.app_dir(root, key)):
            for ref in mods:
                if not st.exists(st.blob(root, hexs(ref[_BLOB_SHA256]))):
                    if on_fetch:
                        on_fetch(uid, g)
                    await fetch_blob(client, root, ref)
                    gc.collect()
            build_app(root, w, key)
        apps.append({
            "u": uid, "n": w[_WL_NAME], "g": g, "e": w[_WL_ENTRY], "k": key,
            "p": w.get(_WL_RESTART_POLICY, 0), "m": [hexs(r[_BLOB_SHA256]) for r in mods],
        })
    return {"gen": gen, "apps": apps}, bad
