# report.py - the device's report (schemas/wire/report.cddl), built into one reused buffer.

import gc

import wire

_out = bytearray(160)


def build(agent):
    """CBOR report of `agent` (applied gen, per-app state, heap, uptime, metrics, error)."""
    rb = agent.st.get("rb") or ()  # [uid, generation, why] of what was rolled back
    ws = []
    uids = []
    for app in agent.sup.apps:
        uids.append(app.uid)
        r = None
        for x in rb:
            if x[0] == app.uid:
                r = x
        ws.append(wire.status(app.uid, app.gen, app.state, app.restarts, app.exit,
                              r[2] if r else app.msg, r is not None))
    for x in rb:
        if x[0] not in uids:  # a new app that was rolled back: nothing runs in its place
            ws.append(wire.status(x[0], x[1], wire.STATE_FAILED, 0, 1, x[2], True))
    for uid, g, msg in agent.unsupported:
        ws.append(wire.status(uid, g, wire.STATE_FAILED, message=msg))
    for uid, g in agent.fetching:
        ws.append(wire.status(uid, g, wire.STATE_FETCHING))
    cur = agent.st.get("cur")
    gc.collect()
    return wire.report(cur["gen"] if cur else 0, ws, gc.mem_free(), agent.uptime(),
                       agent.sup.metrics, agent.error, _out)
