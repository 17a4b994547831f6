# Block2: a 10 KB body into RAM and streamed through a sink, at two block sizes.
import gc
import hashlib

import harness
from harness import hexs


async def fetch(size, out):
    c = harness.client(block_size=size)
    gc.collect()
    r = await c.get("/blob")
    out[f"ram{size}"] = [r.code, len(r.payload), hexs(hashlib.sha256(r.payload).digest()), hexs(r.etag)]
    r = None
    gc.collect()
    h = hashlib.sha256()
    seen = []

    def sink(chunk):
        h.update(chunk)
        seen.append(len(chunk))

    r = await c.get("/blob", sink=sink)
    out[f"sink{size}"] = [r.code, sum(seen), max(seen), len(seen), hexs(h.digest()), len(r.payload)]
    out[f"rxbuf{size}"] = len(c._buf)
    c.close()


async def main():
    out = {}
    for size in (512, 256):
        await fetch(size, out)
    return out


harness.run(main)
