"""Typed wire messages (protocol v1) with validation that names the failing field.

Each top-level message has ``to_cbor()`` and ``from_cbor()``. Nested parts have
``to_obj()`` and ``from_obj(obj, path)`` working on the plain decoded value. Encoders omit
optional fields holding their default (None, empty, False, 0 or the enum default), which is
what keeps ``from_cbor(x).to_cbor() == x`` for every canonical payload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Literal, Self, TypeVar

from .cbor import MAX_PAYLOAD, decode_value, encode_value
from .errors import WireError
from .keys import (
    VERSION_KEY,
    WIRE_VERSION,
    BlobKey,
    CsKey,
    CtrKey,
    DesiredKey,
    HelloKey,
    HttpKey,
    LogClock,
    LogKey,
    LogStream,
    MirrorKey,
    MntKey,
    NetworkMode,
    PortKey,
    ProbeKey,
    RegKey,
    ReportKey,
    ResKey,
    RestartPolicy,
    Runtime,
    VolKey,
    WlKey,
    WorkloadState,
    WsKey,
)

T = TypeVar("T")
E = TypeVar("E", bound=IntEnum)

ConfigValue = str | int | float | bool | bytes | None
Protocol = Literal["tcp", "udp"]

_UINT_MAX = (1 << 64) - 1
_NINT_MIN = -(1 << 64)

# ---------------------------------------------------------------- primitive checks


def _kind(obj: Any) -> str:
    """CDDL name of a decoded value's type, for error messages."""
    if isinstance(obj, bool):
        return "bool"
    if obj is None:
        return "null"
    if isinstance(obj, int):
        return "uint" if obj >= 0 else "nint"
    if isinstance(obj, float):
        return "float"
    if isinstance(obj, str):
        return "tstr"
    if isinstance(obj, bytes):
        return "bstr"
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, dict):
        return "map"
    return type(obj).__name__  # tags (CBORTag, datetime, ...) and simple values


def _expected(path: str, want: str, obj: Any) -> WireError:
    return WireError(path, f"expected {want}, got {_kind(obj)}")


def _uint(obj: Any, path: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or not 0 <= obj <= _UINT_MAX:
        raise _expected(path, "uint", obj)
    return obj


def _int(obj: Any, path: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or not _NINT_MIN <= obj <= _UINT_MAX:
        raise _expected(path, "int", obj)
    return obj


def _port(obj: Any, path: str) -> int:
    value = _uint(obj, path)
    if value > 65535:
        raise WireError(path, f"port {value} is out of range 0..65535")
    return value


def _number(obj: Any, path: str) -> int | float:
    if isinstance(obj, float):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return _int(obj, path)
    raise _expected(path, "int / float", obj)


def _tstr(obj: Any, path: str) -> str:
    if not isinstance(obj, str):
        raise _expected(path, "tstr", obj)
    return obj


def _bstr(obj: Any, path: str) -> bytes:
    if not isinstance(obj, bytes):
        raise _expected(path, "bstr", obj)
    return obj


def _bool(obj: Any, path: str) -> bool:
    if not isinstance(obj, bool):
        raise _expected(path, "bool", obj)
    return obj


def _config_value(obj: Any, path: str) -> ConfigValue:
    if obj is None or isinstance(obj, str | bool | float | bytes):
        return obj
    if isinstance(obj, int):
        return _int(obj, path)
    raise _expected(path, "tstr / int / float / bool / null / bstr", obj)


def _enum(cls: type[E], obj: Any, path: str) -> E:
    value = _uint(obj, path)
    try:
        return cls(value)
    except ValueError:
        names = ", ".join(f"{m.value}={m.name.lower()}" for m in cls)
        raise WireError(path, f"unknown value {value} (expected one of {names})") from None


def _map(obj: Any, path: str) -> dict[Any, Any]:
    if not isinstance(obj, dict):
        raise _expected(path, "map", obj)
    return obj


def _array(obj: Any, path: str, parse: Callable[[Any, str], T], *, nonempty: bool = False) -> tuple[T, ...]:
    if not isinstance(obj, list):
        raise _expected(path, "array", obj)
    if nonempty and not obj:
        raise WireError(path, "expected at least one item")
    return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(obj))


def _str_map(obj: Any, path: str, parse: Callable[[Any, str], T]) -> dict[str, T]:
    out: dict[str, T] = {}
    for key, value in _map(obj, path).items():
        if not isinstance(key, str):
            raise WireError(path, f"expected tstr keys, got {_kind(key)} key {key!r}")
        out[key] = parse(value, f"{path}[{key!r}]")
    return out


class _Fields:
    """Typed access to one decoded int-keyed map; builds error paths from CDDL field names."""

    __slots__ = ("m", "path")

    def __init__(self, obj: Any, path: str) -> None:
        self.m = _map(obj, path)
        self.path = path

    def sub(self, key: IntEnum) -> str:
        return f"{self.path}.{key.name.lower().replace('_', '-')}"

    def req(self, key: IntEnum, parse: Callable[[Any, str], T]) -> T:
        if key.value not in self.m:
            raise WireError(self.sub(key), f"missing (key {key.value})")
        return parse(self.m[key.value], self.sub(key))

    def opt(self, key: IntEnum, parse: Callable[[Any, str], T], default: T) -> T:
        if key.value not in self.m:
            return default
        return parse(self.m[key.value], self.sub(key))

    def has(self, key: IntEnum) -> bool:
        return key.value in self.m

    def version(self) -> None:
        if VERSION_KEY not in self.m:
            raise WireError(f"{self.path}.v", f"missing (key {VERSION_KEY})")
        version = _uint(self.m[VERSION_KEY], f"{self.path}.v")
        if version != WIRE_VERSION:
            raise WireError(
                f"{self.path}.v", f"unsupported protocol version {version} (this codec speaks {WIRE_VERSION})"
            )


def _put(out: dict[int, Any], key: IntEnum, value: Any) -> None:
    """Set an optional field unless it holds its default (None, empty, False, 0)."""
    if value is None or value is False or value == 0 or (isinstance(value, list | dict) and not value):
        return
    out[key.value] = value


class _Message:
    """Shared CBOR entry points of the top-level messages."""

    __slots__ = ()
    NAME: ClassVar[str]

    def to_obj(self) -> dict[int, Any]:
        raise NotImplementedError

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        raise NotImplementedError

    def to_cbor(self, *, max_size: int | None = MAX_PAYLOAD) -> bytes:
        obj = self.to_obj()
        # Never send what a peer following the CDDL would reject.
        type(self).from_obj(obj, self.NAME)
        return encode_value(obj, max_size=max_size)

    @classmethod
    def from_cbor(cls, data: bytes | bytearray | memoryview, *, max_size: int | None = MAX_PAYLOAD) -> Self:
        try:
            obj = decode_value(data, max_size=max_size)
        except WireError as exc:
            raise WireError(cls.NAME, exc.problem) from exc
        return cls.from_obj(obj, cls.NAME)


# ---------------------------------------------------------------- registration


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """POST /rd?ep=<device>: the device introduces itself."""

    NAME: ClassVar[str] = "hello"
    board: str
    firmware: str
    arch: str
    runtimes: tuple[Runtime, ...]
    mem_free: int
    boot_count: int
    token: bytes | None = None
    mem_total: int | None = None
    flash_free: int | None = None

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {
            VERSION_KEY: WIRE_VERSION,
            HelloKey.BOARD: self.board,
            HelloKey.FIRMWARE: self.firmware,
            HelloKey.ARCH: self.arch,
            HelloKey.RUNTIMES: [str(r) for r in self.runtimes],
            HelloKey.MEM_FREE: self.mem_free,
            HelloKey.BOOT_COUNT: self.boot_count,
        }
        if self.token is not None:
            out[HelloKey.TOKEN] = self.token
        if self.mem_total is not None:
            out[HelloKey.MEM_TOTAL] = self.mem_total
        if self.flash_free is not None:
            out[HelloKey.FLASH_FREE] = self.flash_free
        return _plain_keys(out)

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        f = _Fields(obj, path)
        f.version()
        return cls(
            board=f.req(HelloKey.BOARD, _tstr),
            firmware=f.req(HelloKey.FIRMWARE, _tstr),
            arch=f.req(HelloKey.ARCH, _tstr),
            runtimes=f.req(HelloKey.RUNTIMES, lambda o, p: _array(o, p, _runtime, nonempty=True)),
            mem_free=f.req(HelloKey.MEM_FREE, _uint),
            boot_count=f.req(HelloKey.BOOT_COUNT, _uint),
            token=f.opt(HelloKey.TOKEN, _bstr, None),
            mem_total=f.opt(HelloKey.MEM_TOTAL, _uint, None),
            flash_free=f.opt(HelloKey.FLASH_FREE, _uint, None),
        )


def _runtime(obj: Any, path: str) -> Runtime:
    value = _tstr(obj, path)
    try:
        return Runtime(value)
    except ValueError:
        raise WireError(path, f"unknown runtime {value!r} (expected 'micropython' or 'docker')") from None


@dataclass(frozen=True, slots=True)
class MirrorOffer:
    """The gateway's pull-through registry cache, as the registering device reaches it."""

    address: str  # host:port, plain HTTP
    upstream: str  # the registry it fronts, as in image names: "docker.io" or host[:port]

    def to_obj(self) -> dict[int, Any]:
        return {MirrorKey.ADDRESS.value: self.address, MirrorKey.UPSTREAM.value: self.upstream}

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        f = _Fields(obj, path)
        return cls(address=f.req(MirrorKey.ADDRESS, _tstr), upstream=f.req(MirrorKey.UPSTREAM, _tstr))


@dataclass(frozen=True, slots=True)
class Registered(_Message):
    """Payload of the 2.01 Created answer to a hello."""

    NAME: ClassVar[str] = "registered"
    lifetime: int
    location: str
    time: int | None = None
    registry_mirror: MirrorOffer | None = None

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {
            VERSION_KEY: WIRE_VERSION,
            RegKey.LIFETIME: self.lifetime,
            RegKey.LOCATION: self.location,
        }
        if self.time is not None:
            out[RegKey.TIME] = self.time
        if self.registry_mirror is not None:
            out[RegKey.MIRROR] = self.registry_mirror.to_obj()
        return _plain_keys(out)

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        f = _Fields(obj, path)
        f.version()
        return cls(
            lifetime=f.req(RegKey.LIFETIME, _uint),
            location=f.req(RegKey.LOCATION, _tstr),
            time=f.opt(RegKey.TIME, _uint, None),
            registry_mirror=f.opt(RegKey.MIRROR, MirrorOffer.from_obj, None),
        )


# ---------------------------------------------------------------- desired document


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A content-addressed file: the device fetches GET /b/<sha256 hex> when it lacks it."""

    sha256: bytes
    size: int
    name: str

    def to_obj(self) -> dict[int, Any]:
        return {
            BlobKey.SHA256.value: self.sha256,
            BlobKey.SIZE.value: self.size,
            BlobKey.NAME.value: self.name,
        }

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> BlobRef:
        f = _Fields(obj, path)
        digest = f.req(BlobKey.SHA256, _bstr)
        if len(digest) != 32:
            raise WireError(f.sub(BlobKey.SHA256), f"expected 32 bytes, got {len(digest)}")
        return cls(sha256=digest, size=f.req(BlobKey.SIZE, _uint), name=f.req(BlobKey.NAME, _tstr))

    def to_cbor(self, *, max_size: int | None = MAX_PAYLOAD) -> bytes:
        obj = self.to_obj()
        BlobRef.from_obj(obj, "blob-ref")
        return encode_value(obj, max_size=max_size)

    @classmethod
    def from_cbor(
        cls, data: bytes | bytearray | memoryview, *, max_size: int | None = MAX_PAYLOAD
    ) -> BlobRef:
        try:
            obj = decode_value(data, max_size=max_size)
        except WireError as exc:
            raise WireError("blob-ref", exc.problem) from exc
        return cls.from_obj(obj, "blob-ref")


@dataclass(frozen=True, slots=True)
class Port:
    container: int
    host: int | None = None
    protocol: Protocol = "tcp"

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {PortKey.CONTAINER.value: self.container}
        if self.host is not None:
            out[PortKey.HOST.value] = self.host
        if self.protocol != "tcp":
            out[PortKey.PROTOCOL.value] = self.protocol
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Port:
        f = _Fields(obj, path)
        return cls(
            container=f.req(PortKey.CONTAINER, _port),
            host=f.opt(PortKey.HOST, _port, None),
            protocol=f.opt(PortKey.PROTOCOL, _protocol, "tcp"),
        )


def _protocol(obj: Any, path: str) -> Protocol:
    value = _tstr(obj, path)
    if value == "tcp":
        return "tcp"
    if value == "udp":
        return "udp"
    raise WireError(path, f"expected 'tcp' or 'udp', got {value!r}")


@dataclass(frozen=True, slots=True)
class Resources:
    memory: int | None = None  # limit, bytes
    cpu: int | None = None  # limit, millicores

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        if self.memory is not None:
            out[ResKey.MEMORY.value] = self.memory
        if self.cpu is not None:
            out[ResKey.CPU.value] = self.cpu
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Resources:
        f = _Fields(obj, path)
        return cls(memory=f.opt(ResKey.MEMORY, _uint, None), cpu=f.opt(ResKey.CPU, _uint, None))


@dataclass(frozen=True, slots=True)
class HttpGet:
    path: str
    port: int

    def to_obj(self) -> dict[int, Any]:
        return {HttpKey.PATH.value: self.path, HttpKey.PORT.value: self.port}

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> HttpGet:
        f = _Fields(obj, path)
        return cls(path=f.req(HttpKey.PATH, _tstr), port=f.req(HttpKey.PORT, _port))


@dataclass(frozen=True, slots=True)
class Probe:
    """Exactly one of exec, http_get and tcp_port. Zero timings mean the runtime's default."""

    exec: tuple[str, ...] = ()
    http_get: HttpGet | None = None
    tcp_port: int | None = None
    initial_delay: int = 0
    period: int = 0
    timeout: int = 0
    failure_threshold: int = 0
    success_threshold: int = 0

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        _put(out, ProbeKey.EXEC, list(self.exec))
        if self.http_get is not None:
            out[ProbeKey.HTTP_GET.value] = self.http_get.to_obj()
        if self.tcp_port is not None:
            out[ProbeKey.TCP_PORT.value] = self.tcp_port
        _put(out, ProbeKey.INITIAL_DELAY, self.initial_delay)
        _put(out, ProbeKey.PERIOD, self.period)
        _put(out, ProbeKey.TIMEOUT, self.timeout)
        _put(out, ProbeKey.FAILURE_THRESHOLD, self.failure_threshold)
        _put(out, ProbeKey.SUCCESS_THRESHOLD, self.success_threshold)
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Probe:
        f = _Fields(obj, path)
        handlers = [k for k in (ProbeKey.EXEC, ProbeKey.HTTP_GET, ProbeKey.TCP_PORT) if f.has(k)]
        if len(handlers) != 1:
            found = ", ".join(k.name.lower().replace("_", "-") for k in handlers) or "none"
            raise WireError(path, f"expected exactly one of exec, http-get, tcp-port; found {found}")
        return cls(
            exec=f.opt(ProbeKey.EXEC, lambda o, p: _array(o, p, _tstr, nonempty=True), ()),
            http_get=f.opt(ProbeKey.HTTP_GET, HttpGet.from_obj, None),
            tcp_port=f.opt(ProbeKey.TCP_PORT, _port, None),
            initial_delay=f.opt(ProbeKey.INITIAL_DELAY, _uint, 0),
            period=f.opt(ProbeKey.PERIOD, _uint, 0),
            timeout=f.opt(ProbeKey.TIMEOUT, _uint, 0),
            failure_threshold=f.opt(ProbeKey.FAILURE_THRESHOLD, _uint, 0),
            success_threshold=f.opt(ProbeKey.SUCCESS_THRESHOLD, _uint, 0),
        )


@dataclass(frozen=True, slots=True)
class Mount:
    """A volume of the workload mounted into one container."""

    volume: str
    path: str
    read_only: bool = False

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {MntKey.VOLUME.value: self.volume, MntKey.PATH.value: self.path}
        _put(out, MntKey.READ_ONLY, self.read_only)
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Mount:
        f = _Fields(obj, path)
        return cls(
            volume=f.req(MntKey.VOLUME, _tstr),
            path=f.req(MntKey.PATH, _tstr),
            read_only=f.opt(MntKey.READ_ONLY, _bool, False),
        )


_VOLUME_SOURCES = (VolKey.HOST_PATH, VolKey.SECRET, VolKey.CONFIG_MAP)


@dataclass(frozen=True, slots=True)
class Volume:
    """A docker workload's volume: an emptyDir (no source), a host path, or resolved files.

    ``secret``/``config_map`` hold the file contents (name -> bytes), resolved by the gateway
    the way secret env values are. The repr names files, never their contents.
    """

    name: str
    host_path: str | None = None
    secret: Mapping[str, bytes] | None = None
    config_map: Mapping[str, bytes] | None = None

    @property
    def kind(self) -> Literal["emptyDir", "hostPath", "secret", "configMap"]:
        if self.host_path is not None:
            return "hostPath"
        if self.secret is not None:
            return "secret"
        if self.config_map is not None:
            return "configMap"
        return "emptyDir"

    def __repr__(self) -> str:
        files = self.secret if self.secret is not None else self.config_map
        detail = f", host_path={self.host_path!r}" if self.host_path is not None else ""
        if files is not None:
            detail = f", files={sorted(files)!r}"
        return f"Volume(name={self.name!r}, kind={self.kind!r}{detail})"

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {VolKey.NAME.value: self.name}
        # Not _put: an empty Secret is still a secret volume (an empty directory), not an emptyDir.
        if self.host_path is not None:
            out[VolKey.HOST_PATH.value] = self.host_path
        if self.secret is not None:
            out[VolKey.SECRET.value] = dict(self.secret)
        if self.config_map is not None:
            out[VolKey.CONFIG_MAP.value] = dict(self.config_map)
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Volume:
        f = _Fields(obj, path)
        sources = [k for k in _VOLUME_SOURCES if f.has(k)]
        if len(sources) > 1:
            found = ", ".join(k.name.lower().replace("_", "-") for k in sources)
            raise WireError(path, f"expected at most one of host-path, secret, config-map; found {found}")
        return cls(
            name=f.req(VolKey.NAME, _tstr),
            host_path=f.opt(VolKey.HOST_PATH, _tstr, None),
            secret=f.opt(VolKey.SECRET, lambda o, p: _str_map(o, p, _bstr), None),
            config_map=f.opt(VolKey.CONFIG_MAP, lambda o, p: _str_map(o, p, _bstr), None),
        )


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    resources: Resources | None = None
    liveness: Probe | None = None
    readiness: Probe | None = None
    mounts: tuple[Mount, ...] = ()
    working_dir: str | None = None

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {CtrKey.NAME.value: self.name, CtrKey.IMAGE.value: self.image}
        _put(out, CtrKey.COMMAND, list(self.command))
        _put(out, CtrKey.ARGS, list(self.args))
        _put(out, CtrKey.ENV, dict(self.env))
        _put(out, CtrKey.PORTS, [p.to_obj() for p in self.ports])
        if self.resources is not None:
            out[CtrKey.RESOURCES.value] = self.resources.to_obj()
        if self.liveness is not None:
            out[CtrKey.LIVENESS.value] = self.liveness.to_obj()
        if self.readiness is not None:
            out[CtrKey.READINESS.value] = self.readiness.to_obj()
        _put(out, CtrKey.MOUNTS, [m.to_obj() for m in self.mounts])
        if self.working_dir is not None:
            out[CtrKey.WORKING_DIR.value] = self.working_dir
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Container:
        f = _Fields(obj, path)
        return cls(
            name=f.req(CtrKey.NAME, _tstr),
            image=f.req(CtrKey.IMAGE, _tstr),
            command=f.opt(CtrKey.COMMAND, lambda o, p: _array(o, p, _tstr), ()),
            args=f.opt(CtrKey.ARGS, lambda o, p: _array(o, p, _tstr), ()),
            env=f.opt(CtrKey.ENV, lambda o, p: _str_map(o, p, _tstr), {}),
            ports=f.opt(CtrKey.PORTS, lambda o, p: _array(o, p, Port.from_obj), ()),
            resources=f.opt(CtrKey.RESOURCES, Resources.from_obj, None),
            liveness=f.opt(CtrKey.LIVENESS, Probe.from_obj, None),
            readiness=f.opt(CtrKey.READINESS, Probe.from_obj, None),
            mounts=f.opt(CtrKey.MOUNTS, lambda o, p: _array(o, p, Mount.from_obj, nonempty=True), ()),
            working_dir=f.opt(CtrKey.WORKING_DIR, _tstr, None),
        )


_MICROPYTHON_ONLY = (WlKey.ENTRY, WlKey.MODULES, WlKey.CONFIG, WlKey.SECRETS)
_DOCKER_ONLY = (WlKey.CONTAINERS,)


def _common_obj(
    uid: str, name: str, generation: int, runtime: Runtime, restart_policy: RestartPolicy
) -> dict[int, Any]:
    out: dict[int, Any] = {
        WlKey.UID.value: uid,
        WlKey.NAME.value: name,
        WlKey.GENERATION.value: generation,
        WlKey.RUNTIME.value: str(runtime),
    }
    _put(out, WlKey.RESTART_POLICY, int(restart_policy))
    return out


def _reject_keys(f: _Fields, keys: tuple[WlKey, ...], runtime: str) -> None:
    for key in keys:
        if f.has(key):
            raise WireError(f.sub(key), f"not allowed for runtime {runtime!r}")


@dataclass(frozen=True, slots=True)
class MicroPythonWorkload:
    uid: str
    name: str
    generation: int
    entry: str
    modules: tuple[BlobRef, ...] = ()
    config: Mapping[str, ConfigValue] = field(default_factory=dict)
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    runtime: ClassVar[Runtime] = Runtime.MICROPYTHON

    def to_obj(self) -> dict[int, Any]:
        out = _common_obj(self.uid, self.name, self.generation, self.runtime, self.restart_policy)
        out[WlKey.ENTRY.value] = self.entry
        _put(out, WlKey.MODULES, [m.to_obj() for m in self.modules])
        _put(out, WlKey.CONFIG, dict(self.config))
        _put(out, WlKey.SECRETS, dict(self.secrets))
        return out

    @classmethod
    def from_fields(cls, f: _Fields) -> MicroPythonWorkload:
        _reject_keys(f, _DOCKER_ONLY, "micropython")
        return cls(
            uid=f.req(WlKey.UID, _tstr),
            name=f.req(WlKey.NAME, _tstr),
            generation=f.req(WlKey.GENERATION, _uint),
            restart_policy=f.opt(WlKey.RESTART_POLICY, _restart_policy, RestartPolicy.ALWAYS),
            entry=f.req(WlKey.ENTRY, _tstr),
            modules=f.opt(WlKey.MODULES, lambda o, p: _array(o, p, BlobRef.from_obj), ()),
            config=f.opt(WlKey.CONFIG, lambda o, p: _str_map(o, p, _config_value), {}),
            secrets=f.opt(WlKey.SECRETS, lambda o, p: _str_map(o, p, _bstr), {}),
        )


@dataclass(frozen=True, slots=True)
class DockerWorkload:
    uid: str
    name: str
    generation: int
    containers: tuple[Container, ...]
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    volumes: tuple[Volume, ...] = ()
    network: NetworkMode = NetworkMode.HOST
    runtime: ClassVar[Runtime] = Runtime.DOCKER

    def to_obj(self) -> dict[int, Any]:
        out = _common_obj(self.uid, self.name, self.generation, self.runtime, self.restart_policy)
        out[WlKey.CONTAINERS.value] = [c.to_obj() for c in self.containers]
        _put(out, WlKey.VOLUMES, [v.to_obj() for v in self.volumes])
        _put(out, WlKey.NETWORK, int(self.network))
        return out

    @classmethod
    def from_fields(cls, f: _Fields) -> DockerWorkload:
        _reject_keys(f, _MICROPYTHON_ONLY, "docker")
        wl = cls(
            uid=f.req(WlKey.UID, _tstr),
            name=f.req(WlKey.NAME, _tstr),
            generation=f.req(WlKey.GENERATION, _uint),
            restart_policy=f.opt(WlKey.RESTART_POLICY, _restart_policy, RestartPolicy.ALWAYS),
            containers=f.req(WlKey.CONTAINERS, lambda o, p: _array(o, p, Container.from_obj, nonempty=True)),
            volumes=f.opt(WlKey.VOLUMES, lambda o, p: _array(o, p, Volume.from_obj, nonempty=True), ()),
            network=f.opt(WlKey.NETWORK, lambda o, p: _enum(NetworkMode, o, p), NetworkMode.HOST),
        )
        names = [v.name for v in wl.volumes]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise WireError(f"{f.sub(WlKey.VOLUMES)}[{i}].name", f"duplicate volume name {name!r}")
        for i, c in enumerate(wl.containers):
            for j, m in enumerate(c.mounts):
                if m.volume not in names:
                    raise WireError(
                        f"{f.sub(WlKey.CONTAINERS)}[{i}].mounts[{j}].volume", f"no volume named {m.volume!r}"
                    )
        return wl


Workload = MicroPythonWorkload | DockerWorkload


def _restart_policy(obj: Any, path: str) -> RestartPolicy:
    return _enum(RestartPolicy, obj, path)


def workload_from_obj(obj: Any, path: str) -> Workload:
    f = _Fields(obj, path)
    runtime = f.req(WlKey.RUNTIME, _runtime)
    if runtime is Runtime.MICROPYTHON:
        return MicroPythonWorkload.from_fields(f)
    return DockerWorkload.from_fields(f)


@dataclass(frozen=True, slots=True)
class DesiredDoc(_Message):
    """GET /d/<device>/desired: everything the device should run."""

    NAME: ClassVar[str] = "desired"
    gen: int
    workloads: tuple[Workload, ...] = ()

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {VERSION_KEY: WIRE_VERSION, DesiredKey.GEN.value: self.gen}
        _put(out, DesiredKey.WORKLOADS, [w.to_obj() for w in self.workloads])
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        f = _Fields(obj, path)
        f.version()
        return cls(
            gen=f.req(DesiredKey.GEN, _uint),
            workloads=f.opt(DesiredKey.WORKLOADS, lambda o, p: _array(o, p, workload_from_obj), ()),
        )


# ---------------------------------------------------------------- report and logs


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """One container of a docker workload, with its CPU (millicores) and memory (bytes) use."""

    name: str
    state: WorkloadState
    restarts: int = 0
    exit_code: int | None = None
    ready: bool | None = None
    cpu: int | None = None
    memory: int | None = None

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {CsKey.NAME.value: self.name, CsKey.STATE.value: int(self.state)}
        _put(out, CsKey.RESTARTS, self.restarts)
        # Not _put for the rest: 0 is a real value (exit 0, an idle container), absent is unknown.
        if self.exit_code is not None:
            out[CsKey.EXIT_CODE.value] = self.exit_code
        if self.ready is not None:
            out[CsKey.READY.value] = self.ready
        if self.cpu is not None:
            out[CsKey.CPU.value] = self.cpu
        if self.memory is not None:
            out[CsKey.MEMORY.value] = self.memory
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> ContainerStatus:
        f = _Fields(obj, path)
        return cls(
            name=f.req(CsKey.NAME, _tstr),
            state=f.req(CsKey.STATE, lambda o, p: _enum(WorkloadState, o, p)),
            restarts=f.opt(CsKey.RESTARTS, _uint, 0),
            exit_code=f.opt(CsKey.EXIT_CODE, _int, None),
            ready=f.opt(CsKey.READY, _bool, None),
            cpu=f.opt(CsKey.CPU, _uint, None),
            memory=f.opt(CsKey.MEMORY, _uint, None),
        )


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    uid: str
    generation: int
    state: WorkloadState
    restarts: int = 0
    exit_code: int | None = None
    message: str | None = None
    rolled_back: bool = False
    ready: bool | None = None
    containers: tuple[ContainerStatus, ...] = ()

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {
            WsKey.UID.value: self.uid,
            WsKey.GENERATION.value: self.generation,
            WsKey.STATE.value: int(self.state),
        }
        _put(out, WsKey.RESTARTS, self.restarts)
        if self.exit_code is not None:
            out[WsKey.EXIT_CODE.value] = self.exit_code
        if self.message is not None:
            out[WsKey.MESSAGE.value] = self.message
        _put(out, WsKey.ROLLED_BACK, self.rolled_back)
        if self.ready is not None:
            out[WsKey.READY.value] = self.ready
        _put(out, WsKey.CONTAINERS, [c.to_obj() for c in self.containers])
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> WorkloadStatus:
        f = _Fields(obj, path)
        return cls(
            uid=f.req(WsKey.UID, _tstr),
            generation=f.req(WsKey.GENERATION, _uint),
            state=f.req(WsKey.STATE, lambda o, p: _enum(WorkloadState, o, p)),
            restarts=f.opt(WsKey.RESTARTS, _uint, 0),
            exit_code=f.opt(WsKey.EXIT_CODE, _int, None),
            message=f.opt(WsKey.MESSAGE, _tstr, None),
            rolled_back=f.opt(WsKey.ROLLED_BACK, _bool, False),
            ready=f.opt(WsKey.READY, _bool, None),
            containers=f.opt(
                WsKey.CONTAINERS, lambda o, p: _array(o, p, ContainerStatus.from_obj, nonempty=True), ()
            ),
        )


@dataclass(frozen=True, slots=True)
class Report(_Message):
    """POST /d/<device>/report: what the device has applied and how its workloads fare."""

    NAME: ClassVar[str] = "report"
    gen: int
    workloads: tuple[WorkloadStatus, ...] = ()
    heap_free: int | None = None
    uptime: int | None = None
    metrics: Mapping[str, int | float] = field(default_factory=dict)
    error: str | None = None

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {VERSION_KEY: WIRE_VERSION, ReportKey.GEN.value: self.gen}
        _put(out, ReportKey.WORKLOADS, [w.to_obj() for w in self.workloads])
        if self.heap_free is not None:
            out[ReportKey.HEAP_FREE.value] = self.heap_free
        if self.uptime is not None:
            out[ReportKey.UPTIME.value] = self.uptime
        _put(out, ReportKey.METRICS, dict(self.metrics))
        if self.error is not None:
            out[ReportKey.ERROR.value] = self.error
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        f = _Fields(obj, path)
        f.version()
        return cls(
            gen=f.req(ReportKey.GEN, _uint),
            workloads=f.opt(ReportKey.WORKLOADS, lambda o, p: _array(o, p, WorkloadStatus.from_obj), ()),
            heap_free=f.opt(ReportKey.HEAP_FREE, _uint, None),
            uptime=f.opt(ReportKey.UPTIME, _uint, None),
            metrics=f.opt(ReportKey.METRICS, lambda o, p: _str_map(o, p, _number), {}),
            error=f.opt(ReportKey.ERROR, _tstr, None),
        )


@dataclass(frozen=True, slots=True)
class LogLine:
    t: int  # milliseconds on the batch's clock
    stream: LogStream
    text: str

    def to_obj(self) -> list[Any]:
        return [self.t, int(self.stream), self.text]

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> LogLine:
        if not isinstance(obj, list):
            raise _expected(path, "array", obj)
        if len(obj) != 3:
            raise WireError(path, f"expected [t, stream, text], got {len(obj)} items")
        return cls(
            t=_uint(obj[0], f"{path}.t"),
            stream=_enum(LogStream, obj[1], f"{path}.stream"),
            text=_tstr(obj[2], f"{path}.text"),
        )


@dataclass(frozen=True, slots=True)
class LogBatch(_Message):
    """POST /d/<device>/logs: lines of one workload (one container, for docker)."""

    NAME: ClassVar[str] = "log-batch"
    uid: str
    lines: tuple[LogLine, ...] = ()
    container: str | None = None
    clock: LogClock = LogClock.UNIX_MS
    dropped: int = 0

    def to_obj(self) -> dict[int, Any]:
        out: dict[int, Any] = {
            VERSION_KEY: WIRE_VERSION,
            LogKey.UID.value: self.uid,
            LogKey.LINES.value: [line.to_obj() for line in self.lines],
        }
        if self.container is not None:
            out[LogKey.CONTAINER.value] = self.container
        _put(out, LogKey.CLOCK, int(self.clock))
        _put(out, LogKey.DROPPED, self.dropped)
        return out

    @classmethod
    def from_obj(cls, obj: Any, path: str) -> Self:
        f = _Fields(obj, path)
        f.version()
        return cls(
            uid=f.req(LogKey.UID, _tstr),
            lines=f.req(LogKey.LINES, lambda o, p: _array(o, p, LogLine.from_obj)),
            container=f.opt(LogKey.CONTAINER, _tstr, None),
            clock=f.opt(LogKey.CLOCK, lambda o, p: _enum(LogClock, o, p), LogClock.UNIX_MS),
            dropped=f.opt(LogKey.DROPPED, _uint, 0),
        )


# CDDL rule name -> message class: what a CoAP resource or a test looks up.
MESSAGES: dict[str, type[Hello | Registered | DesiredDoc | Report | LogBatch | BlobRef]] = {
    "hello": Hello,
    "registered": Registered,
    "desired": DesiredDoc,
    "report": Report,
    "log-batch": LogBatch,
    "blob-ref": BlobRef,
}


def _plain_keys(out: dict[int, Any]) -> dict[int, Any]:
    # IntEnum keys encode as ints anyway; plain ints keep reprs and equality obvious.
    return {int(k): v for k, v in out.items()}
