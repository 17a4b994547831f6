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
# RAM: msg.py (hello, registered, desired) is imported only around a registration or a new
# desired document, applier.py only while applying; both are dropped from sys.modules
# afterwards. Neither keeps module-level names beyond a few functions (their wire numbers
# are private constants), so importing them again needs no large contiguous block.

import asyncio
import gc
import sys
from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

import coap
import net
import report
from store import Store
from supervisor import Supervisor

VERSION = "0.1.0"
_CBOR_CF = const(60)
_CREATED = const(0x41)
_ARCHS = ("", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
          "xtensa", "xtensawin", "rv32imc", "rv64imc")


def _gone(code):
    return code == 0x81 or code == 0x83 or code == 0x84  # 4.01, 4.03, 4.04: registration unknown


def _drop(name):
    # forget a lazily imported module: its RAM is given back at the next collection
    if name in sys.modules:
        del sys.modules[name]


def _read_desired(doc):
    import msg

    try:
        return msg.read_desired(doc)
    finally:
        _drop("msg")


async def _prepare(client, store, gen, wls, on_fetch):
    try:
        import applier

        return await applier.prepare(client, store, gen, wls, on_fetch)
    finally:
        _drop("applier")


def arch():
    try:
        return _ARCHS[(sys.implementation._mpy >> 10) & 15] or "unknown"  # type: ignore[attr-defined]
    except (AttributeError, IndexError):
        return "unknown"


class Agent:
    def __init__(self, cfg, wdt=None):
        g = cfg.get
        self.cfg = cfg
        self.name = g("device") or g("name")
        self.store = Store(g("data", "data"))
        self.sup = Supervisor(self.store, self._changed, g("backoff", 1), g("backoffMax", 60),
                              g("crashLimit", 3), g("logLines", 20), g("logBytes", 1024))
        self.sup.on_crash_loop = self._crash_loop
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
        self.loop_crash = None
        self.applying = False
        self.up_ms = 0
        self.client = coap.Client(net.UDPTransport(g("host", "127.0.0.1"), g("port", 5683)),
                                  ack_timeout=g("ackTimeout", 2.0), block_size=g("blockSize", 256))

    # ---- state ----------------------------------------------------------------------
    def uptime(self):
        return self.up_ms // 1000

    def _changed(self):
        coap.rouse(self.ev_report)

    def _err(self, msg):
        print("fleetlet:", msg)
        self.error = msg[:120]

    def _sync(self):
        s = self.st
        self.sup.sync(s.get("cur"), bool(s.get("trial")) and bool(s.get("good")))

    def boot(self):
        s = self.store.load()
        s["boot"] = s.get("boot", 0) + 1
        if s.get("trial"):
            s["trial"] += 1
            if s["trial"] > self.cfg.get("trialBoots", 3) + 1 and s.get("good"):
                self._rollback(s, "did not run %ds in %d boots" % (self.good_after, s["trial"] - 1))
        self.store.save(s)
        self.store.gc(s)
        self.st = s
        cur = s.get("cur")
        print("fleetlet: boot %d, gen %d%s" % (s["boot"], cur["gen"] if cur else 0,
                                               ", on trial" if s.get("trial") else ""))
        self._sync()

    def _switch(self, rec):
        s = self.st
        good = s.get("good")
        keys = [a["k"] for a in good["apps"]] if good else []
        if all(a["k"] in keys for a in rec["apps"]) and good is not None:
            s["good"], s["trial"] = rec, 0  # nothing new to prove
        else:
            s["trial"] = 1
        s["cur"] = rec
        s.pop("bad", None)
        s.pop("rb", None)
        self.store.save(s)  # the switch: old or new, never half
        self._sync()
        self.store.gc(s)
        print("fleetlet: applied gen %d%s" % (rec["gen"], ", on trial" if s["trial"] else ""))

    def _rollback(self, s, why):
        bad, good = s["cur"], s["good"]
        keys = [a["k"] for a in good["apps"]]
        s["rb"] = [[a["u"], a["g"], "rolled back: " + why] for a in bad["apps"] if a["k"] not in keys]
        s["bad"], s["cur"], s["trial"] = bad["gen"], good, 0
        self._err("gen %d rolled back to %d: %s" % (bad["gen"], good["gen"], why))

    def _gc(self):
        if not self.applying:  # an apply's temporaries are not in the state yet
            self.store.gc(self.st)

    def _crash_loop(self, app, err):
        self.loop_crash = (app, err)  # handled by _health_loop: not from inside the app's task

    # ---- housekeeping ---------------------------------------------------------------
    async def _health_loop(self):
        t = ticks_ms()
        while True:
            await asyncio.sleep(1)
            now = ticks_ms()
            self.up_ms += ticks_diff(now, t)
            t = now
            if self.wdt:
                self.wdt.feed()
            s = self.st
            if self.loop_crash and s.get("trial") and s.get("good"):
                app, err = self.loop_crash
                self._rollback(s, "%s crashed %d times: %s" % (app.name, app.crashes, err))
                self.store.save(s)
                self._sync()
                self._gc()
                self._changed()
            elif s.get("trial") and s.get("cur") and self.sup.healthy(self.good_after):
                s["good"], s["trial"] = s["cur"], 0
                self.store.save(s)
                self.sup.trial = False
                self._gc()
                print("fleetlet: gen %d is good" % s["cur"]["gen"])
            self.loop_crash = None

    async def _report_loop(self):
        while True:
            await coap.doze(self.ev_report, self.interval * 1000)
            await asyncio.sleep_ms(100)  # let a burst of changes settle into one report
            if not self.registered:
                continue
            try:
                r = await self.client.post("/d/%s/report" % self.name, report.build(self),
                                           content_format=_CBOR_CF)
                if _gone(r.code):
                    self.rereg = True
                    coap.rouse(self.ev_desired)
            except (coap.CoapError, MemoryError):
                pass  # a report is sent again soon; a full heap may be transient
            gc.collect()

    # ---- registration and the desired document ----------------------------------------
    async def _register(self):
        c, g = self.client, self.cfg.get
        delay = 1
        while True:
            self.registered = False
            if await self._hello(c, g):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)

    async def _hello(self, c, g):
        try:
            gc.collect()
            import msg

            tok = g("token")
            hello = msg.hello(g("board", sys.platform), VERSION, arch(), ["micropython"],
                              gc.mem_free(), self.st["boot"], tok.encode() if tok else None,
                              gc.mem_free() + gc.mem_alloc(), self.store.free())
            r = await c.post("/rd?ep=" + self.name, hello, content_format=_CBOR_CF)
            hello = None
            if r.code == _CREATED:
                life = msg.read_registered(r.payload)[0]
                self.due = ticks_add(ticks_ms(), max(life * 800, 5000))
                self.registered = True
                self.rereg = False
                print("fleetlet: registered as %s" % self.name)
                self._changed()
                return True
            self._err("registration refused: %s" % r.code_str())
        except (coap.CoapError, ValueError, MemoryError) as e:  # msg.WireError is a ValueError
            self._err("registration: %r" % e)
        finally:
            _drop("msg")
        return False

    def _on_desired(self, m):
        # runs in the CoAP receive loop: only take note (a document of several blocks comes
        # here whole: coap.Observation fetched the rest)
        if m.code == coap.CONTENT:
            if m.etag != self.etag:
                self.doc, self.etag = m.payload, m.etag
        elif _gone(m.code):
            self.rereg = True
        coap.rouse(self.ev_desired)

    def _expired(self):
        return self.rereg or ticks_diff(ticks_ms(), self.due) >= 0

    async def _desired_loop(self):
        path = "/d/%s/desired" % self.name
        sleepy = self.cfg.get("sleepy")
        poll = self.cfg.get("pollInterval", self.interval)
        while True:
            await self._register()
            obs = None
            if not sleepy:
                obs = await self.client.observe(path, self._on_desired)
            while not self._expired():
                if obs is not None and not obs.registrations:
                    self.need_get = True  # Observe not established (yet): GET it meanwhile
                if sleepy or self.need_get:
                    await self._get(path)
                await self._apply()
                if obs is not None and not obs.active:
                    break  # the gateway ended the observation with an error
                await coap.doze(self.ev_desired, (poll if sleepy else 5) * 1000)
            if obs is not None:
                await obs.cancel(False)

    async def _get(self, path):
        self.need_get = False
        try:
            r = await self.client.get(path, etag=self.etag)
        except coap.CoapError:
            return
        if r.code == coap.CONTENT and r.etag != self.etag:
            self.doc, self.etag = r.payload, r.etag
        elif _gone(r.code):
            self.rereg = True

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
        self.applying = True
        try:
            rec, bad = await _prepare(self.client, self.store, gen, wls, self._fetching)
        except (coap.CoapError, ValueError, OSError, MemoryError) as e:  # applier.ApplyError is a ValueError
            self._err("apply gen %d: %r" % (gen, e))
            self.fetching = []
            self._changed()
            await asyncio.sleep(2)  # retried on the next wake-up
            return
        finally:
            self.applying = False
            wls = None
        self.fetching = []
        self.unsupported = bad
        self.error = None
        self._switch(rec)
        if self.doc is doc:
            self.doc = None
        gc.collect()

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
        self.boot()
        await asyncio.gather(self._desired_loop(), self._report_loop(), self._health_loop(),
                             self._log_loop())
