# versions.py - state.json: load, save, garbage collection, and its transitions: count a
# boot, switch to a new version (on trial, unless nothing in it is new), promote the version
# on trial to good, roll back.
#
# store.py says what state.json holds and why each write is crash-safe; agent.py's header
# gives the trial rules. The transitions work on the agent `a` (a.st is the state, a.root
# the data dir). The agent imports this module for one transition and drops it again, so
# it is not in RAM while an apply fetches blobs (applier.py and store.py are).

import json
import os

import store


def load(root):
    """The state in force: state.json, or state.tmp if state.json is missing or unusable."""
    for name in ("state.json", "state.tmp"):
        try:
            with open(root + "/" + name) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if type(st) is dict and _usable(root, st):
            return st
    return {"boot": 0}


def _usable(root, st):
    for k in ("cur", "good"):
        rec = st.get(k)
        if rec:
            for a in rec["apps"]:
                if not store.exists(store.app_dir(root, a["k"])):
                    return False
    return True


def save(root, st):
    tmp = root + "/state.tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    store.replace(tmp, root + "/state.json")


def gc(root, st):
    """Delete temporaries and everything that neither st["cur"] nor st["good"] names."""
    keys, blobs = set(), set()
    for k in ("cur", "good"):
        rec = st.get(k)
        if rec:
            for a in rec["apps"]:
                keys.add(a["k"])
                for m in a["m"]:
                    blobs.add(m)
    n = 0
    for sub, keep in (("/apps", keys), ("/blobs", blobs)):
        d = root + sub
        for e in list(os.ilistdir(d)):
            if e[0] not in keep:
                store.rmtree(d + "/" + e[0])
                n += 1
    return n


def boot(a):
    """Count this boot (and a boot on trial); roll back a version that never got good."""
    store.init(a.root)
    s = load(a.root)
    s["boot"] = s.get("boot", 0) + 1
    if s.get("trial"):
        s["trial"] += 1
        if s["trial"] > a.cfg.get("trialBoots", 3) + 1 and s.get("good"):
            rollback(a, s, "did not run %ds in %d boots" % (a.good_after, s["trial"] - 1))
    save(a.root, s)
    gc(a.root, s)
    a.st = s
    cur = s.get("cur")
    print("fleetlet: boot %d, gen %d%s" % (s["boot"], cur["gen"] if cur else 0,
                                           ", on trial" if s.get("trial") else ""))


def switch(a, rec):
    """Make rec (from applier.prepare) the current version: on trial unless nothing is new."""
    s = a.st
    good = s.get("good")
    keys = [x["k"] for x in good["apps"]] if good else []
    if all(x["k"] in keys for x in rec["apps"]) and good is not None:
        s["good"], s["trial"] = rec, 0  # nothing new to prove
    else:
        s["trial"] = 1
    s["cur"] = rec
    s.pop("bad", None)
    s.pop("rb", None)
    save(a.root, s)  # the switch: old or new, never half
    gc(a.root, s)
    print("fleetlet: applied gen %d%s" % (rec["gen"], ", on trial" if s["trial"] else ""))
    # the caller then starts the apps (Agent._sync), once this module has left RAM


def promote(a):
    """The version on trial ran well: it becomes the last good one."""
    s = a.st
    s["good"], s["trial"] = s["cur"], 0
    save(a.root, s)
    a.sup.trial = False
    if not a.applying:  # an apply's temporaries are not in the state yet
        gc(a.root, s)
    print("fleetlet: gen %d is good" % s["cur"]["gen"])


def rollback(a, s, why):
    """Back to the last good version (s is changed, not saved); the report flags it."""
    bad, good = s["cur"], s["good"]
    keys = [x["k"] for x in good["apps"]]
    s["rb"] = [[x["u"], x["g"], "rolled back: " + why] for x in bad["apps"] if x["k"] not in keys]
    s["bad"], s["cur"], s["trial"] = bad["gen"], good, 0
    a._err("gen %d rolled back to %d: %s" % (bad["gen"], good["gen"], why))


def crash_rollback(a, app, err):
    """An app of the version on trial crash-loops: roll back now."""
    s = a.st
    rollback(a, s, "%s crashed %d times: %s" % (app.name, app.crashes, err))
    save(a.root, s)
    a._sync()
    if not a.applying:
        gc(a.root, s)
    a._changed()
