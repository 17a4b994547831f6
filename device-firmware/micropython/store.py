# store.py - the firmware's files on flash, and why a power cut never breaks them.
#
# Layout under the data dir:
#   state.json     {"boot": n, "cur": rec, "good": rec, "trial": t, "bad": gen, "rb": [uid]}
#   state.tmp      the next state.json while it is being written
#   blobs/<hex>    verified content, named by its SHA-256 (hex); never changed once there
#   blobs/<hex>.t  a download in progress
#   apps/<key>/    one app's module files plus "_c" (CBOR [config, secrets]); never
#                  changed once there. key = hash of all the app's content (applier.app_key)
#   apps/<key>.t/  an app folder being built
# rec = {"gen": desired gen, "apps": [{"u": uid, "n": name, "g": generation, "e": entry,
#        "k": key, "p": restart policy, "m": [blob hex, ...]}, ...]}
# "cur" is what runs, "good" the last version that ran well (kept for rollback), "trial"
# counts boots of a "cur" that has not yet proven itself (0: proven), "bad" a desired gen
# that was rolled back (not applied again), "rb" the uids that were rolled back.
#
# Crash safety. Everything but state.json is write-once: a file or folder appears under
# its final name only by os.rename() after it was completely written (and, for blobs,
# verified). So at any instant each final-named thing is complete, and a half-written
# thing has a ".t"/".tmp" name that boot deletes. The one mutable thing, state.json, is
# replaced the same way: write state.tmp, close it, rename it over state.json. Step by step:
#   1. fetching blobs, building app folders: state.json untouched -> old version boots;
#      leftovers are garbage-collected at boot.
#   2. writing state.tmp: state.json untouched -> old version.
#   3. rename(state.tmp, state.json): atomic on littlefs and POSIX -> old or new.
#      (FAT cannot rename over a file: we remove state.json first; a cut in between leaves
#      only a complete state.tmp, which load() reads.)
#   4. after the switch, garbage collection deletes only what neither "cur" nor "good"
#      names -> the new version and the last good one stay whole.
# load() prefers state.json and falls back to state.tmp only if state.json is missing or
# unreadable; a state naming a missing app folder is treated as unusable (never expected).
# Writes that happen while an old or new state is in force (boot count, trial count,
# rollback) use the same write-then-rename, so every boot sees either the old or new state.
#
# This module holds the layout and the crash-safe primitives; versions.py reads, writes and
# garbage-collects state.json with them. The agent imports both only while applying
# (applier.py) or for a transition of state.json, and drops them from sys.modules afterwards.

import os

_DIR = 0x4000  # S_IFDIR in os.stat()[0] and os.ilistdir() types


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def rmtree(p):
    try:
        mode = os.stat(p)[0]
    except OSError:
        return
    if mode & _DIR:
        for e in os.ilistdir(p):
            rmtree(p + "/" + e[0])
        os.rmdir(p)
    else:
        os.remove(p)


def replace(src, dst):
    """rename() over an existing file; FAT refuses that, so remove dst first there."""
    try:
        os.rename(src, dst)
    except OSError:
        if not exists(dst):
            raise
        os.remove(dst)
        os.rename(src, dst)


def init(root):
    """Make the data dir and its blobs/ and apps/ folders where missing."""
    for d in (root, root + "/blobs", root + "/apps"):
        if not exists(d):
            os.mkdir(d)


def blob(root, hexsha):
    return root + "/blobs/" + hexsha


def app_dir(root, key):
    return root + "/apps/" + key
