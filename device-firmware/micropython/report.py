# report.py - the device's report (schemas/wire/report.cddl), built into one reused buffer.
#
# Built here with wire.py's numbers as private constants (folded by the compiler, a test
# checks they match wire.py), so wire.py need not stay in RAM between registrations.

import gc
from micropython import const

import cbor

_V = const(0)
_VERSION = const(1)
_REPORT_GEN = const(1)
_REPORT_WORKLOADS = const(2)
_REPORT_HEAP_FREE = const(3)
_REPORT_UPTIME = const(4)
_REPORT_METRICS = const(5)
_REPORT_ERROR = const(6)
_WS_UID = const(1)
_WS_GENERATION = const(2)
_WS_STATE = const(3)
_WS_RESTARTS = const(4)
_WS_EXIT_CODE = const(5)
_WS_MESSAGE = const(6)
_WS_ROLLED_BACK = const(7)
_STATE_FETCHING = const(1)
_STATE_FAILED = const(5)

_out = bytearray(160)


def _status(uid, generation, state, restarts=0, exit_code=None, message=None, rolled_back=False):
    # one workload-status; defaults are omitted, as the CDDL asks
    s = {_WS_UID: uid, _WS_GENERATION: generation, _WS_STATE: state}
    if restarts:
        s[_WS_RESTARTS] = restarts
    if exit_code is not None:
        s[_WS_EXIT_CODE] = exit_code
    if message is not None:
        s[_WS_MESSAGE] = message
    if rolled_back:
        s[_WS_ROLLED_BACK] = True
    return s


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
        ws.append(_status(app.uid, app.gen, app.state, app.restarts, app.exit,
                          r[2] if r else app.msg, r is not None))
    for x in rb:
        if x[0] not in uids:  # a new app that was rolled back: nothing runs in its place
            ws.append(_status(x[0], x[1], _STATE_FAILED, 0, 1, x[2], True))
    for uid, g, msg in agent.unsupported:
        ws.append(_status(uid, g, _STATE_FAILED, message=msg))
    for uid, g in agent.fetching:
        ws.append(_status(uid, g, _STATE_FETCHING))
    cur = agent.st.get("cur")
    gc.collect()
    m = {_V: _VERSION, _REPORT_GEN: cur["gen"] if cur else 0, _REPORT_HEAP_FREE: gc.mem_free(),
         _REPORT_UPTIME: agent.uptime()}
    if ws:
        m[_REPORT_WORKLOADS] = ws
    if agent.sup.metrics:
        m[_REPORT_METRICS] = agent.sup.metrics
    if agent.error is not None:
        m[_REPORT_ERROR] = agent.error
    return cbor.dumps(m, _out)
