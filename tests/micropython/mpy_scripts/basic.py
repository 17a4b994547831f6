# GET, POST, ETag poll (2.03), separate response, query splitting.
import harness
from harness import hexs


async def main():
    c = harness.client()
    out = {}
    r = await c.get("/hello")
    out["get"] = [r.code, r.payload.decode(), r.content_format, r.type]
    r = await c.post("/echo", b"\x01\x02payload", content_format=60)
    out["post"] = [r.code, hexs(r.payload), r.content_format, r.location_path]
    r = await c.get("/etag")
    tag = r.etag
    out["etag_first"] = [r.code, r.payload.decode(), hexs(tag), r.max_age]
    r = await c.get("/etag", etag=tag)
    out["etag_poll"] = [r.code, r.payload.decode(), hexs(r.etag)]
    r = await c.get("/etag", etag=b"\x09")
    out["etag_stale"] = [r.code, r.payload.decode()]
    r = await c.get("/slow")
    out["separate"] = [r.code, r.payload.decode(), r.type]
    r = await c.get("/nope?x=1", query={"y": "2"})
    out["missing"] = [r.code, r.code_str()]
    r = await c.request(1, "/hello", confirmable=False)
    out["non"] = [r.code, r.payload.decode()]
    out["stats"] = [c.bad, c.retx]
    c.close()
    return out


harness.run(main)
