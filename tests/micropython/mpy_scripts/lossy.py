# Through a relay that drops ~30% of datagrams each way: CON requests still succeed.
import hashlib

import harness
from harness import hexs


async def main():
    c = harness.client(ack_timeout=0.05, max_retransmit=8)
    out = {"ok": 0, "fail": []}
    for i in range(6):
        try:
            if i % 2:
                msg = f"msg{i}"
                r = await c.post("/echo", msg)
                good = r.payload == msg.encode()
            else:
                r = await c.get("/hello")
                good = r.payload == b"hello fleetlet"
            out["ok"] += 1 if good else 0
        except Exception as e:
            out["fail"].append([i, repr(e)])
    h = hashlib.sha256()
    size = [0]

    def sink(chunk):
        h.update(chunk)
        size[0] += len(chunk)

    await c.get("/blob", sink=sink)  # 20 blocks, each its own CON exchange
    out["blob"] = [size[0], hexs(h.digest())]
    out["retx"] = c.retx
    out["dup"] = c.dup
    c.close()
    return out


harness.run(main)
