# Observe: three notifications in order, deregistration, passive cancel by RST, re-registration.
import harness
from harness import until


async def bump(c, got):
    n = len(got)
    await c.post("/obs/bump")
    await until(lambda: len(got) > n)


async def main():
    c = harness.client(obs_margin=1)
    out = {}
    got = []
    o = await c.observe("/obs", lambda r: got.append([r.observe, r.payload.decode(), r.code]))
    out["observers"] = [(await c.get("/obs/count")).payload.decode()]
    for _ in range(3):
        await bump(c, got)
    out["got"] = got
    await o.cancel()
    out["observers"].append((await c.get("/obs/count")).payload.decode())

    # passive cancel: forget locally, the next notification is answered with RST
    got2 = []
    o2 = await c.observe("/obs", lambda r: got2.append(r.payload.decode()))
    await until(lambda: len(got2) > 0)
    out["observers"].append((await c.get("/obs/count")).payload.decode())
    await o2.cancel(deregister=False)
    await c.post("/obs/bump")
    await until(lambda: c.rst_sent > 0)
    await until(lambda: False, 300)  # let the server process the RST
    out["observers"].append((await c.get("/obs/count")).payload.decode())
    out["got2"] = got2
    out["rst_sent"] = c.rst_sent

    # /quiet has Max-Age 1 and never notifies: the client must re-register by itself
    got3 = []
    o3 = await c.observe("/quiet", lambda r: got3.append(r.payload.decode()))
    await until(lambda: o3.registrations >= 3)
    out["quiet"] = [o3.registrations, len(got3)]
    await o3.cancel()
    c.close()
    return out


harness.run(main)
