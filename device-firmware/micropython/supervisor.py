# supervisor.py - run apps as asyncio tasks, restart them with backoff, spot crash loops.
#
# An app is a folder apps/<key>/ whose entry module has `async def main(ctx)`. It is
# imported with its folder first on sys.path; the modules it imported are then dropped
# from sys.modules, so two apps may both have a main.py or util.py. (A module imported
# lazily inside main() would resolve against the firmware's path: import at the top.)
#
# Restarts: policy always (0) restarts after any exit, on-failure (1) after an exception,
# never (2) not at all. The delay doubles from `base` up to `cap` seconds, and starts over
# once an app has run for `cap` seconds. While a new version is on trial, an app that
# crashes `limit` times is noted in `crash_loop` (the agent rolls back).
#
# Logs: ctx.log() prints, and keeps the line in a small per-app ring (at most `log_lines`
# lines and `log_bytes` bytes; the oldest are dropped and counted) until the agent has
# POSTed it to the gateway as a log-batch (batch()).

import asyncio
import gc
import sys
from micropython import const
from time import ticks_diff, ticks_ms

import cbor

# wire.py's numbers (a test checks they match): private, so they are folded and take no RAM
_V = const(0)
_VERSION = const(1)
_LOG_UID = const(1)
_LOG_LINES = const(3)
_LOG_CLOCK = const(4)
_LOG_DROPPED = const(5)
_CLOCK_UPTIME_MS = const(1)
_STREAM_STDOUT = const(0)
_STREAM_STDERR = const(1)
_RESTART_ON_FAILURE = const(1)
_RESTART_NEVER = const(2)
_STATE_PENDING = const(0)
_STATE_STARTING = const(2)
_STATE_RUNNING = const(3)
_STATE_SUCCEEDED = const(4)
_STATE_FAILED = const(5)
_STATE_BACKOFF = const(6)
_LINE_MAX = const(160)  # longer lines are cut

_T0 = ticks_ms()  # log times are ms since boot (the uptime-ms log clock)


class App:
    """One app, and also what the app's main(ctx) gets as ctx (one object, not two): it uses
    ctx.name, ctx.uid, ctx.config, ctx.secrets, ctx.log(msg) and ctx.metric(name, value)."""

    def __init__(self, sup, rec, path):
        self.sup = sup
        self.uid = rec["u"]
        self.name = rec["n"]
        self.short = self.name.split("/")[-1]
        self.gen = rec["g"]
        self.entry = rec["e"]
        self.key = rec["k"]
        self.policy = rec["p"]
        self.path = path
        self.state = _STATE_PENDING
        self.restarts = 0
        self.crashes = 0  # since the version went on trial
        self.exit = None
        self.msg = None
        self.task = None
        self.since = ticks_ms()
        self.logs = []  # (ms since boot, stream, text) not sent yet
        self.lbytes = 0
        self.lcount = 0  # lines ever logged: logs holds numbers lcount - len(logs) .. lcount - 1
        self.dropped = 0  # lines dropped and not reported yet
        self.config = self.secrets = None  # read from the app folder at each start

    def log(self, text, stream=_STREAM_STDOUT):
        """Print a line as [name] text, and keep it for the gateway (see batch())."""
        print("[%s] %s" % (self.name, text))
        if type(text) is not str:
            text = str(text)
        if len(text) > _LINE_MAX:
            text = text[:_LINE_MAX]
        logs, sup = self.logs, self.sup
        logs.append((ticks_diff(ticks_ms(), _T0), stream, text))
        self.lcount += 1
        self.lbytes += len(text) + 8
        while len(logs) > sup.log_lines or self.lbytes > sup.log_bytes:
            self.lbytes -= len(logs.pop(0)[2]) + 8
            self.dropped += 1

    def metric(self, name, value):
        self.sup.metrics[self.short + "." + name] = value

    def batch(self):
        """-> (CBOR log-batch of the pending lines, lcount, dropped): pass the last two to sent()."""
        m = {_V: _VERSION, _LOG_UID: self.uid, _LOG_LINES: self.logs, _LOG_CLOCK: _CLOCK_UPTIME_MS}
        if self.dropped:
            m[_LOG_DROPPED] = self.dropped
        return cbor.dumps(m), self.lcount, self.dropped

    def sent(self, upto, dropped):
        """The lines numbered below `upto` and `dropped` drops have reached the gateway."""
        logs = self.logs
        k = len(logs) - (self.lcount - upto)  # lines logged meanwhile stay; dropped ones are gone
        while k > 0:
            self.lbytes -= len(logs.pop(0)[2]) + 8
            k -= 1
        self.dropped -= min(dropped, self.dropped)

    def _set(self, state, msg=None):
        if state != self.state or msg != self.msg:
            self.state = state
            if msg is not None:
                self.msg = msg
            self.sup.changed()

    def _load(self):
        p = self.path
        with open(p + "/_c", "rb") as f:
            self.config, self.secrets = cbor.loads(f.read())
        if "cbor_dec" in sys.modules:  # the decoder (cbor.loads) is not kept in RAM
            del sys.modules["cbor_dec"]
        gc.collect()  # compiling the entry module needs contiguous blocks (1 KB and more)
        before = list(sys.modules)
        saved = sys.modules.pop(self.entry, None)
        sys.path.insert(0, p)
        try:
            mod = __import__(self.entry)
        finally:
            sys.path.pop(0)
            for k in list(sys.modules):
                if k not in before:
                    del sys.modules[k]
            if saved is not None:
                sys.modules[self.entry] = saved
        return mod.main

    async def run(self):
        sup = self.sup
        fails = 0
        while True:
            self._set(_STATE_STARTING)
            t0 = ticks_ms()
            err = None
            try:
                main = self._load()
                gc.collect()
                coro = main(self)
                self.since = ticks_ms()
                self._set(_STATE_RUNNING)
                await coro
                self.exit = 0
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # noqa: B036 - an app's crash must not end the firmware
                err = "%s: %s" % (type(e).__name__, e)
                self.exit = 1
            main = coro = None
            gc.collect()
            ran = ticks_diff(ticks_ms(), t0) // 1000
            if err is not None:
                self.log("crashed: " + err, _STREAM_STDERR)
                self.crashes += 1
                if sup.trial and self.crashes >= sup.limit:
                    self._set(_STATE_BACKOFF, err)
                    sup.crash_loop = (self, err)  # the agent rolls back (not from this task)
                    return
            if self.policy == _RESTART_NEVER or (err is None and self.policy == _RESTART_ON_FAILURE):
                self._set(_STATE_FAILED if err else _STATE_SUCCEEDED, err)
                return
            fails = 0 if ran >= sup.cap else fails + 1
            self.restarts += 1
            self._set(_STATE_BACKOFF, err)
            await asyncio.sleep(min(sup.base * (1 << min(fails, 16)) // 2, sup.cap))


class Supervisor:
    def __init__(self, root, changed, base=1, cap=60, limit=3, log_lines=20, log_bytes=1024):
        self.root = root  # the data dir: apps live in <root>/apps/<key> (store.py)
        self.log_lines = log_lines
        self.log_bytes = log_bytes
        self.changed = changed  # called on every state change (report on change)
        self.base = base
        self.cap = cap
        self.limit = limit
        self.apps = []
        self.metrics = {}
        self.trial = False
        self.crash_loop = None  # (app, error) of an app that crash-loops on trial

    def sync(self, rec, trial):
        """Run exactly rec's apps: keep those whose folder is unchanged, stop the others."""
        self.trial = trial
        want = rec["apps"] if rec else []
        keys = [a["k"] for a in want]
        keep = []
        for app in self.apps:
            if app.key in keys:
                keep.append(app)
            elif app.task:
                app.task.cancel()
        have = [a.key for a in keep]
        for a in want:
            if a["k"] in have:
                for app in keep:
                    if app.key == a["k"]:
                        app.gen = a["g"]  # e.g. a new Workload generation with the same content
            else:
                app = App(self, a, self.root + "/apps/" + a["k"])
                app.task = asyncio.create_task(app.run())
                keep.append(app)
        for app in keep:
            app.crashes = 0
        self.apps = keep
        self.changed()

    def healthy(self, secs):
        """Every app has run for `secs` since its last start, or finished as its policy wants."""
        now = ticks_ms()
        for app in self.apps:
            if app.state == _STATE_SUCCEEDED:
                continue
            if app.state != _STATE_RUNNING or ticks_diff(now, app.since) < secs * 1000:
                return False
        return True
