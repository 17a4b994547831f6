# wire.py - fleetlet wire protocol v1 (schemas/wire/*.cddl) for the firmware.
#
# Map keys are small ints; the names below are the CDDL constants with the
# prefix upper-cased (hello.mem-free -> HELLO_MEM_FREE). A test checks them
# against the CDDL. Docker-only keys (containers' insides) are left out: a
# microcontroller never reads them.
#
# Builders return a bytearray; pass `out` to reuse one buffer for every report.
# On the device, agent.py, supervisor.py, msg.py and applier.py use these numbers as
# private constants (a test checks they match), so the agent never loads this module.

import cbor
from cbor import const  # micropython.const, or the identity on CPython

# hello() and the readers (registered, desired) live in msg.py, which the agent loads on
# its own; they are the same functions here.
from msg import WireError, hello, read_desired, read_registered  # noqa: F401

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


def blob_path(ref):
    """CoAP path of a blob reference: /b/<sha256 hex>."""
    sha = ref[BLOB_SHA256]
    return "/b/" + "".join("%02x" % x for x in sha)
