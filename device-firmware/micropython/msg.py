# msg.py - the messages the agent exchanges at registration and for the desired document:
# hello (built), registered and desired (read and checked).
#
# wire.py's numbers as private constants (folded by the compiler; a test checks they match
# wire.py), so loading this module interns no constant names and builds no globals table.
# wire.py re-exports these functions: one implementation. The agent imports this module
# only around a registration or a new document, and drops it again (agent._drop).

import cbor
from cbor import const  # micropython.const, or the identity on CPython

_V = const(0)
_VERSION = const(1)
_HELLO_BOARD = const(1)
_HELLO_FIRMWARE = const(2)
_HELLO_ARCH = const(3)
_HELLO_RUNTIMES = const(4)
_HELLO_MEM_FREE = const(5)
_HELLO_BOOT_COUNT = const(6)
_HELLO_TOKEN = const(7)
_HELLO_MEM_TOTAL = const(8)
_HELLO_FLASH_FREE = const(9)
_REG_LIFETIME = const(1)
_REG_LOCATION = const(2)
_REG_TIME = const(3)
_DESIRED_GEN = const(1)
_DESIRED_WORKLOADS = const(2)
_WL_UID = const(1)
_WL_NAME = const(2)
_WL_GENERATION = const(3)
_WL_RUNTIME = const(4)
_WL_RESTART_POLICY = const(5)
_WL_ENTRY = const(6)
_WL_MODULES = const(7)
_WL_CONFIG = const(8)
_WL_SECRETS = const(9)
_BLOB_SHA256 = const(1)
_BLOB_SIZE = const(2)
_BLOB_NAME = const(3)


class WireError(ValueError):
    pass


def hello(board, firmware, arch, runtimes, mem_free, boot_count, token=None, mem_total=None,
          flash_free=None, out=None):
    m = {
        _V: _VERSION,
        _HELLO_BOARD: board,
        _HELLO_FIRMWARE: firmware,
        _HELLO_ARCH: arch,
        _HELLO_RUNTIMES: runtimes,
        _HELLO_MEM_FREE: mem_free,
        _HELLO_BOOT_COUNT: boot_count,
    }
    if token is not None:
        m[_HELLO_TOKEN] = token
    if mem_total is not None:
        m[_HELLO_MEM_TOTAL] = mem_total
    if flash_free is not None:
        m[_HELLO_FLASH_FREE] = flash_free
    return cbor.dumps(m, out)


def _top(data, name):
    try:
        m = cbor.loads(data)
    except ValueError as e:
        raise WireError("%s: %s" % (name, e))
    if type(m) is not dict:
        raise WireError("%s: expected map, got %s" % (name, _kind(m)))
    v = m.get(_V)
    if v != _VERSION or type(v) is not int:
        raise WireError("%s.v: unsupported protocol version %r" % (name, v))
    return m


_KINDS = {int: "int", str: "tstr", bytes: "bstr", list: "array", dict: "map", bool: "bool",
          float: "float"}


def _kind(v):
    # CDDL name of a decoded value's type; the gateway's messages use the same words.
    if type(v) is int:
        return "uint" if v >= 0 else "nint"
    return "null" if v is None else _KINDS.get(type(v), "tag or simple")


def _get(m, key, kind, path, required=True):
    # kind: a type, or "uint". Returns None for an absent optional field.
    if key not in m:
        if required:
            raise WireError("%s: missing (key %d)" % (path, key))
        return None
    v = m[key]
    if kind == "uint":
        ok = type(v) is int and v >= 0
    else:
        ok = type(v) is kind
    if not ok:
        want = kind if kind == "uint" else _KINDS[kind]
        raise WireError("%s: expected %s, got %s" % (path, want, _kind(v)))
    return v


def read_registered(data):
    """-> (lifetime_s, location, gateway_time_or_None)"""
    m = _top(data, "registered")
    return (
        _get(m, _REG_LIFETIME, "uint", "registered.lifetime"),
        _get(m, _REG_LOCATION, str, "registered.location"),
        _get(m, _REG_TIME, "uint", "registered.time", False),
    )


def _check_workload(w, p):
    if type(w) is not dict:
        raise WireError("%s: expected map, got %s" % (p, _kind(w)))
    _get(w, _WL_UID, str, p + ".uid")
    _get(w, _WL_NAME, str, p + ".name")
    _get(w, _WL_GENERATION, "uint", p + ".generation")
    runtime = _get(w, _WL_RUNTIME, str, p + ".runtime")
    _get(w, _WL_RESTART_POLICY, "uint", p + ".restart-policy", False)
    if runtime != "micropython":
        return  # left for the applier to report as unsupported on this board
    _get(w, _WL_ENTRY, str, p + ".entry")
    for i, b in enumerate(_get(w, _WL_MODULES, list, p + ".modules", False) or ()):
        bp = "%s.modules[%d]" % (p, i)
        if type(b) is not dict:
            raise WireError("%s: expected map, got %s" % (bp, _kind(b)))
        sha = _get(b, _BLOB_SHA256, bytes, bp + ".sha256")
        if len(sha) != 32:
            raise WireError("%s.sha256: expected 32 bytes, got %d" % (bp, len(sha)))
        _get(b, _BLOB_SIZE, "uint", bp + ".size")
        _get(b, _BLOB_NAME, str, bp + ".name")
    _get(w, _WL_CONFIG, dict, p + ".config", False)
    _get(w, _WL_SECRETS, dict, p + ".secrets", False)


def read_desired(data):
    """-> (gen, workloads): workloads are the decoded maps, checked for the fields
    a MicroPython app needs; read them with the WL_* and BLOB_* keys."""
    m = _top(data, "desired")
    gen = _get(m, _DESIRED_GEN, "uint", "desired.gen")
    workloads = _get(m, _DESIRED_WORKLOADS, list, "desired.workloads", False) or []
    for i, w in enumerate(workloads):
        _check_workload(w, "desired.workloads[%d]" % i)
    return gen, workloads
