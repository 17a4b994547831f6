# Malformed datagrams arrive before every response: the client ignores and counts them.
import harness


async def main():
    c = harness.client()
    out = {"answers": []}
    for _ in range(3):
        r = await c.get("/hello")
        out["answers"].append([r.code, r.payload.decode()])
    r = await c.post("/echo", b"still alive")
    out["answers"].append([r.code, r.payload.decode()])
    out["bad"] = c.bad
    out["rx"] = c.rx
    out["rst_sent"] = c.rst_sent
    out["dup"] = c.dup
    out["stale"] = c.stale
    c.close()
    return out


harness.run(main)
