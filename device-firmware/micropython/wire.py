# wire.py - fleetlet wire protocol v1 (schemas/wire/*.cddl) for the firmware.
#
# Map keys are small ints; the names below are the CDDL constants with the
# prefix upper-cased (hello.mem-free -> HELLO_MEM_FREE). A test checks them
# against the CDDL. Docker-only keys (containers' insides) are left out: a
# microcontroller never reads them.
#
# Builders return a bytearray; pass `out` to reuse one buffer for every report.

import cbor
from cbor import const  # micropython.const, or the identity on CPython

VERSION = const(1)
V = const(0)  # key of the version in every top-level message

HELLO_BOARD = const(1)
HELLO_FIRMWARE = const(2)
HELLO_ARCH = const(3)
HELLO_RUNTIMES = const(4)
HELLO_MEM_FREE = const(5)
HELLO_BOOT_COUNT = const(6)
HELLO_TOKEN = const(7)
HELLO_MEM_TOTAL = const(8)
HELLO_FLASH_FREE = const(9)

REG_LIFETIME = const(1)
REG_LOCATION = const(2)
REG_TIME = const(3)

DESIRED_GEN = const(1)
DESIRED_WORKLOADS = const(2)

WL_UID = const(1)
WL_NAME = const(2)
WL_GENERATION = const(3)
WL_RUNTIME = const(4)
WL_RESTART_POLICY = const(5)
WL_ENTRY = const(6)
WL_MODULES = const(7)
WL_CONFIG = const(8)
WL_SECRETS = const(9)
WL_CONTAINERS = const(10)

BLOB_SHA256 = const(1)
BLOB_SIZE = const(2)
BLOB_NAME = const(3)

REPORT_GEN = const(1)
REPORT_WORKLOADS = const(2)
REPORT_HEAP_FREE = const(3)
REPORT_UPTIME = const(4)
REPORT_METRICS = const(5)
REPORT_ERROR = const(6)

WS_UID = const(1)
WS_GENERATION = const(2)
WS_STATE = const(3)
WS_RESTARTS = const(4)
WS_EXIT_CODE = const(5)
WS_MESSAGE = const(6)
WS_ROLLED_BACK = const(7)
WS_READY = const(8)

LOG_UID = const(1)
LOG_CONTAINER = const(2)
LOG_LINES = const(3)
LOG_CLOCK = const(4)
LOG_DROPPED = const(5)

# Enumerations (CDDL &(...) rules)
RESTART_ALWAYS = const(0)
RESTART_ON_FAILURE = const(1)
RESTART_NEVER = const(2)

STATE_PENDING = const(0)
STATE_FETCHING = const(1)
STATE_STARTING = const(2)
STATE_RUNNING = const(3)
STATE_SUCCEEDED = const(4)
STATE_FAILED = const(5)
STATE_BACKOFF = const(6)
STATE_TERMINATING = const(7)

CLOCK_UNIX_MS = const(0)
CLOCK_UPTIME_MS = const(1)

STREAM_STDOUT = const(0)
STREAM_STDERR = const(1)

RUNTIME_MICROPYTHON = "micropython"
RUNTIME_DOCKER = "docker"


class WireError(ValueError):
    pass


# ---------------------------------------------------------------- device -> gateway


def hello(board, firmware, arch, runtimes, mem_free, boot_count, token=None, mem_total=None,
          flash_free=None, out=None):
    m = {
        V: VERSION,
        HELLO_BOARD: board,
        HELLO_FIRMWARE: firmware,
        HELLO_ARCH: arch,
        HELLO_RUNTIMES: runtimes,
        HELLO_MEM_FREE: mem_free,
        HELLO_BOOT_COUNT: boot_count,
    }
    if token is not None:
        m[HELLO_TOKEN] = token
    if mem_total is not None:
        m[HELLO_MEM_TOTAL] = mem_total
    if flash_free is not None:
        m[HELLO_FLASH_FREE] = flash_free
    return cbor.dumps(m, out)


def status(uid, generation, state, restarts=0, exit_code=None, message=None, rolled_back=False,
           ready=None):
    """One workload's entry for report(). Defaults are omitted, as the CDDL asks."""
    s = {WS_UID: uid, WS_GENERATION: generation, WS_STATE: state}
    if restarts:
        s[WS_RESTARTS] = restarts
    if exit_code is not None:
        s[WS_EXIT_CODE] = exit_code
    if message is not None:
        s[WS_MESSAGE] = message
    if rolled_back:
        s[WS_ROLLED_BACK] = True
    if ready is not None:
        s[WS_READY] = ready
    return s


def report(gen, workloads=None, heap_free=None, uptime=None, metrics=None, error=None, out=None):
    m = {V: VERSION, REPORT_GEN: gen}
    if workloads:
        m[REPORT_WORKLOADS] = workloads
    if heap_free is not None:
        m[REPORT_HEAP_FREE] = heap_free
    if uptime is not None:
        m[REPORT_UPTIME] = uptime
    if metrics:
        m[REPORT_METRICS] = metrics
    if error is not None:
        m[REPORT_ERROR] = error
    return cbor.dumps(m, out)


def log_batch(uid, lines, container=None, clock=CLOCK_UNIX_MS, dropped=0, out=None):
    """lines: a list of [t_ms, STREAM_*, text]."""
    m = {V: VERSION, LOG_UID: uid, LOG_LINES: lines}
    if container is not None:
        m[LOG_CONTAINER] = container
    if clock != CLOCK_UNIX_MS:
        m[LOG_CLOCK] = clock
    if dropped:
        m[LOG_DROPPED] = dropped
    return cbor.dumps(m, out)


# ---------------------------------------------------------------- gateway -> device


def _top(data, name):
    try:
        m = cbor.loads(data)
    except ValueError as e:
        raise WireError("%s: %s" % (name, e))
    if type(m) is not dict:
        raise WireError("%s: expected map, got %s" % (name, _kind(m)))
    v = m.get(V)
    if v != VERSION or type(v) is not int:
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
        _get(m, REG_LIFETIME, "uint", "registered.lifetime"),
        _get(m, REG_LOCATION, str, "registered.location"),
        _get(m, REG_TIME, "uint", "registered.time", False),
    )


def _check_workload(w, p):
    if type(w) is not dict:
        raise WireError("%s: expected map, got %s" % (p, _kind(w)))
    _get(w, WL_UID, str, p + ".uid")
    _get(w, WL_NAME, str, p + ".name")
    _get(w, WL_GENERATION, "uint", p + ".generation")
    runtime = _get(w, WL_RUNTIME, str, p + ".runtime")
    _get(w, WL_RESTART_POLICY, "uint", p + ".restart-policy", False)
    if runtime != RUNTIME_MICROPYTHON:
        return  # left for the applier to report as unsupported on this board
    _get(w, WL_ENTRY, str, p + ".entry")
    for i, b in enumerate(_get(w, WL_MODULES, list, p + ".modules", False) or ()):
        bp = "%s.modules[%d]" % (p, i)
        if type(b) is not dict:
            raise WireError("%s: expected map, got %s" % (bp, _kind(b)))
        sha = _get(b, BLOB_SHA256, bytes, bp + ".sha256")
        if len(sha) != 32:
            raise WireError("%s.sha256: expected 32 bytes, got %d" % (bp, len(sha)))
        _get(b, BLOB_SIZE, "uint", bp + ".size")
        _get(b, BLOB_NAME, str, bp + ".name")
    _get(w, WL_CONFIG, dict, p + ".config", False)
    _get(w, WL_SECRETS, dict, p + ".secrets", False)


def read_desired(data):
    """-> (gen, workloads): workloads are the decoded maps, checked for the fields
    a MicroPython app needs; read them with the WL_* and BLOB_* keys."""
    m = _top(data, "desired")
    gen = _get(m, DESIRED_GEN, "uint", "desired.gen")
    workloads = _get(m, DESIRED_WORKLOADS, list, "desired.workloads", False) or []
    for i, w in enumerate(workloads):
        _check_workload(w, "desired.workloads[%d]" % i)
    return gen, workloads


def blob_path(ref):
    """CoAP path of a blob reference: /b/<sha256 hex>."""
    sha = ref[BLOB_SHA256]
    return "/b/" + "".join("%02x" % x for x in sha)
