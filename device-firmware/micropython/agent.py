# agent.py - register, follow the desired document, apply it, supervise, report.
#
# Tasks: _desired_loop (registration with backoff, then Observe - or ETag polling for a
# sleepy device - re-registering when the lifetime runs out or the gateway forgets us),
# _report_loop (every report interval, and soon after any change), _health_loop (once a
# second: watchdog, uptime, promoting a version that ran well, rolling back one that
# crash-loops). Trial and rollback: a new version is "on trial" until all its apps have
# run for goodAfter seconds; `crashLimit` crashes of an app, or `trialBoots` boots that
# never got that far, switch back to the last good version and flag it in the report.
# _log_loop POSTs the apps' pending log lines (supervisor.py keeps them) every few seconds.
#
# RAM: what runs rarely is imported when needed and dropped from sys.modules afterwards:
# register.py and msg.py (hello, registered) for a registration, msg.py for a new desired
# document, applier.py (with store.py) while applying, versions.py (with store.py: the
# transitions of state.json) to count a boot, switch, promote or roll back, and cbor_dec.py
# (the CBOR decoder) after reading a message. None keeps module-level names beyond a few
# functions (wire numbers are private constants), so importing one again needs no large
# contiguous block.

import asyncio
import gc
import sys
from micropython import const
from time import ticks_diff, ticks_ms

import cbor
import coap
import net
from supervisor import Supervisor

VERSION = "0.1.0"
_CBOR_CF = const(60)
# wire.py's numbers for the report (a test checks they match): private, so they are folded
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

_out = bytearray(160)  # the report, rebuilt in place every time


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


def _report(agent):
    # CBOR report (schemas/wire/report.cddl) of `agent`: applied gen, per-app state, heap,
    # uptime, metrics, error; built into one reused buffer
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
         _REPORT_UPTIME: agent.up_ms // 1000}
    if ws:
        m[_REPORT_WORKLOADS] = ws
    if agent.sup.metrics:
        m[_REPORT_METRICS] = agent.sup.metrics
    if agent.error is not None:
        m[_REPORT_ERROR] = agent.error
    return cbor.dumps(m, _out)


def _gone(code):
    return code == 0x81 or code == 0x83 or code == 0x84  # 4.01, 4.03, 4.04: registration unknown


def _drop(*names):
    # forget lazily imported modules: their RAM is given back at the next collection
    for name in names:
        if name in sys.modules:
            del sys.modules[name]


def _read_desired(doc):
    import msg

    try:
        return msg.read_desired(doc)
    finally:
        _drop("msg", "cbor_dec")


async def _prepare(client, root, gen, wls, on_fetch):
    try:
        import applier

        return await applier.prepare(client, root, gen, wls, on_fetch)
    finally:
        _drop("applier")  # store.py stays for the switch that follows


def _versions():
    # versions.py (state.json transitions) when needed: Agent._done drops it again. None if
    # the heap has no room for it now (the caller tries again later).
    try:
        import versions

        return versions
    except MemoryError:
        _drop("versions")
        return None


class Agent:
    def __init__(self, cfg, wdt=None):
        g = cfg.get
        self.cfg = cfg
        self.name = g("device") or g("name")
        self.root = g("data", "data")
        self.sup = Supervisor(self.root, self._changed, g("backoff", 1), g("backoffMax", 60),
                              g("crashLimit", 3), g("logLines", 20), g("logBytes", 1024))
        self.good_after = g("goodAfter", 30)
        self.interval = g("reportInterval", g("report_interval", 30))
        self.wdt = wdt
        self.ev_report = [None, False]  # coap.doze() and coap.rouse(): cheaper than asyncio.Event
        self.ev_desired = [None, False]
        self.st = {}
        self.doc = None  # the newest desired document not applied yet
        self.etag = None
        self.need_get = False
        self.rereg = False
        self.registered = False
        self.due = ticks_ms()  # re-register before the lifetime runs out
        self.unsupported = []
        self.fetching = []
        self.error = None
        self.applying = False
        self.up_ms = 0
        self.client = coap.Client(net.UDPTransport(g("host", "127.0.0.1"), g("port", 5683)),
                                  ack_timeout=g("ackTimeout", 2.0), block_size=g("blockSize", 256))

    # ---- state ----------------------------------------------------------------------
    def _changed(self):
        coap.rouse(self.ev_report)

    def _err(self, msg):
        print("fleetlet:", msg)
        self.error = msg[:120]

    def _sync(self):
        s = self.st
        self.sup.sync(s.get("cur"), bool(s.get("trial")) and bool(s.get("good")))

    def _done(self):
        # after a state.json transition: versions.py and store.py leave RAM again (store.py
        # stays while an apply holds it: imported again meanwhile, it would load twice)
        _drop("versions")
        if not self.applying:
            _drop("store")

    # ---- housekeeping ---------------------------------------------------------------
    async def _health_loop(self):
        t = ticks_ms()
        sup = self.sup
        while True:
            await asyncio.sleep(1)
            now = ticks_ms()
            self.up_ms += ticks_diff(now, t)
            t = now
            if self.wdt:
                self.wdt.feed()
            s = self.st
            if sup.crash_loop and s.get("trial") and s.get("good"):
                v = _versions()
                if v is None:
                    continue  # the crash loop is still noted: next second
                v.crash_rollback(self, *sup.crash_loop)
                self._done()
            elif s.get("trial") and s.get("cur") and sup.healthy(self.good_after):
                v = _versions()
                if v is not None:
                    v.promote(self)
                    self._done()
            v = None
            sup.crash_loop = None

    async def _report_loop(self):
        while True:
            await coap.doze(self.ev_report, self.interval * 1000)
            await asyncio.sleep_ms(100)  # let a burst of changes settle into one report
            if not self.registered:
                continue
            try:
                r = await self.client.post("/d/%s/report" % self.name, _report(self),
                                           content_format=_CBOR_CF)
                if _gone(r.code):
                    self.rereg = True
                    coap.rouse(self.ev_desired)
            except (coap.CoapError, MemoryError):
                pass  # a report is sent again soon; a full heap may be transient
            gc.collect()

    # ---- registration and the desired document ----------------------------------------
    async def _register(self):
        delay = 1
        while True:
            self.registered = False
            try:
                import register

                if await register.attempt(self):
                    self.registered = True
                    self.rereg = False
                    self._changed()
                    return
            except (coap.CoapError, ValueError, MemoryError) as e:  # msg.WireError is a ValueError
                self._err("registration: %r" % e)
            finally:
                _drop("register", "msg", "cbor_dec")
                register = None  # type: ignore[assignment]  # not kept through the sleep
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)

    def _on_desired(self, m):
        # runs in the CoAP receive loop: only take note (a document of several blocks comes
        # here whole: coap.Observation fetched the rest)
        if m.code == coap.CONTENT:
            if m.etag != self.etag:
                self.doc, self.etag = m.payload, m.etag
        elif _gone(m.code):
            self.rereg = True
        coap.rouse(self.ev_desired)

    async def _desired_loop(self):
        path = "/d/%s/desired" % self.name
        sleepy = self.cfg.get("sleepy")
        poll = self.cfg.get("pollInterval", self.interval)
        while True:
            await self._register()
            obs = None
            if not sleepy:
                obs = await self.client.observe(path, self._on_desired)
            # until the registration's lifetime runs out, or the gateway forgot us
            while not self.rereg and ticks_diff(ticks_ms(), self.due) < 0:
                if obs is not None and not obs.registrations:
                    self.need_get = True  # Observe not established (yet): GET it meanwhile
                if sleepy or self.need_get:
                    self.need_get = False
                    try:
                        r = await self.client.get(path, etag=self.etag)
                        if r.code == coap.CONTENT and r.etag != self.etag:
                            self.doc, self.etag = r.payload, r.etag
                        elif _gone(r.code):
                            self.rereg = True
                    except coap.CoapError:
                        pass
                    r = None
                await self._apply()
                if obs is not None and not obs.active:
                    break  # the gateway ended the observation with an error
                await coap.doze(self.ev_desired, (poll if sleepy else 5) * 1000)
            if obs is not None:
                await obs.cancel(False)

    async def _apply(self):
        doc = self.doc
        if doc is None:
            return
        s = self.st
        try:
            gen, wls = _read_desired(doc)
        except MemoryError as e:
            self._err("desired: %r" % e)
            await asyncio.sleep(2)  # retried on the next wake-up
            return
        except ValueError as e:  # msg.WireError
            self._err("desired: %s" % e)
            self.doc = self.etag = None
            self.need_get = True  # fetched whole again on the next round
            return
        cur = s.get("cur")
        if gen == (cur["gen"] if cur else 0) or gen == s.get("bad"):
            self.doc = None  # nothing new, or the version we rolled back from
            return
        print("fleetlet: applying gen %d" % gen)
        if self.doc is doc:
            self.doc = None  # decoded: the bytes are not kept while applying
        doc = None
        self.applying = True
        try:
            rec, bad = await _prepare(self.client, self.root, gen, wls, self._fetching)
            wls = None
            v = _versions()
            if v is None:
                raise MemoryError("no room to switch")
        except (coap.CoapError, ValueError, OSError, MemoryError) as e:  # applier.ApplyError is a ValueError
            self.applying = False
            self._done()
            self._err("apply gen %d: %r" % (gen, e))
            self.fetching = []
            self._changed()
            if self.doc is None:  # retried on the next wake-up, with the document fetched again
                self.etag = None
                self.need_get = True
            await asyncio.sleep(2)
            return
        finally:
            wls = None
        self.applying = False
        self.fetching = []
        self.unsupported = bad
        self.error = None
        v.switch(self, rec)
        v = None
        self._done()
        gc.collect()
        self._sync()  # the apps' objects go where the apply's modules were

    def _fetching(self, uid, g):
        if (uid, g) not in self.fetching:
            self.fetching.append((uid, g))
            self._changed()

    async def _log_loop(self):
        path = "/d/%s/logs" % self.name
        every = self.cfg.get("logInterval", 3)
        while True:
            await asyncio.sleep(every)
            if not self.registered:
                continue
            for app in self.sup.apps:
                if not app.logs and not app.dropped:
                    continue
                try:
                    buf, upto, dropped = app.batch()
                    r = await self.client.post(path, buf, content_format=_CBOR_CF)
                except (coap.CoapError, MemoryError):
                    break  # kept (as the ring allows) for the next round
                buf = None
                if _gone(r.code):
                    self.rereg = True
                    coap.rouse(self.ev_desired)
                    break
                app.sent(upto, dropped)  # taken, or refused for good (4.00, 4.13): not resent

    async def run(self):
        import versions

        versions.boot(self)
        versions = None  # type: ignore[assignment]
        self._done()
        self._sync()
        await asyncio.gather(self._desired_loop(), self._report_loop(), self._health_loop(),
                             self._log_loop())
