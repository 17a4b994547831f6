"""Integer map keys and enumerations of wire protocol v1, mirroring schemas/wire/*.cddl.

tests/unit/test_wire_cddl.py checks every constant here against the CDDL and against the
firmware's wire.py, so the three cannot drift apart.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

WIRE_VERSION = 1
VERSION_KEY = 0  # `v` in the CDDL: present in every top-level message


class HelloKey(IntEnum):
    BOARD = 1
    FIRMWARE = 2
    ARCH = 3
    RUNTIMES = 4
    MEM_FREE = 5
    BOOT_COUNT = 6
    TOKEN = 7
    MEM_TOTAL = 8
    FLASH_FREE = 9


class RegKey(IntEnum):
    LIFETIME = 1
    LOCATION = 2
    TIME = 3
    MIRROR = 4


class MirrorKey(IntEnum):
    ADDRESS = 1
    UPSTREAM = 2


class DesiredKey(IntEnum):
    GEN = 1
    WORKLOADS = 2


class WlKey(IntEnum):
    UID = 1
    NAME = 2
    GENERATION = 3
    RUNTIME = 4
    RESTART_POLICY = 5
    ENTRY = 6
    MODULES = 7
    CONFIG = 8
    SECRETS = 9
    CONTAINERS = 10
    VOLUMES = 11
    NETWORK = 12


class VolKey(IntEnum):
    NAME = 1
    HOST_PATH = 2
    SECRET = 3
    CONFIG_MAP = 4


class MntKey(IntEnum):
    VOLUME = 1
    PATH = 2
    READ_ONLY = 3


class BlobKey(IntEnum):
    SHA256 = 1
    SIZE = 2
    NAME = 3


class CtrKey(IntEnum):
    NAME = 1
    IMAGE = 2
    COMMAND = 3
    ARGS = 4
    ENV = 5
    PORTS = 6
    RESOURCES = 7
    LIVENESS = 8
    READINESS = 9
    MOUNTS = 10
    WORKING_DIR = 11


class PortKey(IntEnum):
    CONTAINER = 1
    HOST = 2
    PROTOCOL = 3


class ResKey(IntEnum):
    MEMORY = 1
    CPU = 2


class ProbeKey(IntEnum):
    EXEC = 1
    HTTP_GET = 2
    TCP_PORT = 3
    INITIAL_DELAY = 4
    PERIOD = 5
    TIMEOUT = 6
    FAILURE_THRESHOLD = 7
    SUCCESS_THRESHOLD = 8


class HttpKey(IntEnum):
    PATH = 1
    PORT = 2


class ReportKey(IntEnum):
    GEN = 1
    WORKLOADS = 2
    HEAP_FREE = 3
    UPTIME = 4
    METRICS = 5
    ERROR = 6


class WsKey(IntEnum):
    UID = 1
    GENERATION = 2
    STATE = 3
    RESTARTS = 4
    EXIT_CODE = 5
    MESSAGE = 6
    ROLLED_BACK = 7
    READY = 8
    CONTAINERS = 9


class CsKey(IntEnum):
    NAME = 1
    STATE = 2
    RESTARTS = 3
    EXIT_CODE = 4
    READY = 5
    CPU = 6
    MEMORY = 7


class LogKey(IntEnum):
    UID = 1
    CONTAINER = 2
    LINES = 3
    CLOCK = 4
    DROPPED = 5


# CDDL key-name prefix -> key class; the test suite uses this to compare with the CDDL.
KEY_CLASSES: dict[str, type[IntEnum]] = {
    "hello": HelloKey,
    "reg": RegKey,
    "mirror": MirrorKey,
    "desired": DesiredKey,
    "wl": WlKey,
    "vol": VolKey,
    "mnt": MntKey,
    "blob": BlobKey,
    "ctr": CtrKey,
    "port": PortKey,
    "res": ResKey,
    "probe": ProbeKey,
    "http": HttpKey,
    "report": ReportKey,
    "ws": WsKey,
    "cs": CsKey,
    "log": LogKey,
}


class Runtime(StrEnum):
    MICROPYTHON = "micropython"
    DOCKER = "docker"


class RestartPolicy(IntEnum):
    ALWAYS = 0
    ON_FAILURE = 1
    NEVER = 2


class WorkloadState(IntEnum):
    PENDING = 0
    FETCHING = 1
    STARTING = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    BACKOFF = 6
    TERMINATING = 7


class NetworkMode(IntEnum):
    HOST = 0
    NONE = 1


class LogClock(IntEnum):
    UNIX_MS = 0
    UPTIME_MS = 1


class LogStream(IntEnum):
    STDOUT = 0
    STDERR = 1


# CDDL enum rule name -> enum class.
ENUM_CLASSES: dict[str, type[IntEnum]] = {
    "restart-policy": RestartPolicy,
    "workload-state": WorkloadState,
    "network-mode": NetworkMode,
    "log-clock": LogClock,
    "log-stream": LogStream,
}
