"""Workload (API JSON) -> one entry of a device's desired document (wire protocol v1).

MicroPython app modules given inline (``source``) or by ``configMapRef`` become blobs,
content-addressed by SHA-256; the entry carries only their references. Docker containers
carry their env resolved from Secrets and ConfigMaps, and secret / configMap volumes carry
their files resolved the same way (inline, like secret env values: the device never reads the
API). References are read through a :class:`RefResolver`, so the translation itself never
talks HTTP.

Nothing of a spec is dropped silently: what the wire cannot carry, or the device cannot do, is
refused with a :class:`TranslateError` (the workload's Delivered condition says why) rather
than delivered differently from what was asked. Messages name fields, never secret values.

Desired documents: :func:`encode_doc` builds the CBOR; its ``gen`` is chosen by the caller
from :func:`content_hash`, which covers the workloads only, so a gateway that rebuilds the
same content (after a restart or a relist) keeps gen and ETag, and devices restart nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetlet.hardware.quantity import parse_bytes, parse_cpu_millis

from .wire import (
    MAX_PAYLOAD,
    VERSION_KEY,
    WIRE_VERSION,
    BlobRef,
    ConfigValue,
    Container,
    DesiredDoc,
    DockerWorkload,
    HttpGet,
    MicroPythonWorkload,
    Mount,
    NetworkMode,
    Port,
    Probe,
    Resources,
    RestartPolicy,
    Volume,
    WireError,
    Workload,
    encode_value,
)

Obj = dict[str, Any]

RESTART_POLICIES = {
    "Always": RestartPolicy.ALWAYS,
    "OnFailure": RestartPolicy.ON_FAILURE,
    "Never": RestartPolicy.NEVER,
}

# How a Workload asks for no network (compose `network_mode: none` sets it); absent: host.
NETWORK_ANNOTATION = "fleetlet.io/network-mode"
NETWORK_MODES = {"host": NetworkMode.HOST, "none": NetworkMode.NONE}


class TranslateError(Exception):
    """The workload cannot be delivered as it is (e.g. a referenced ConfigMap key is missing)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RefResolver(Protocol):
    """Reads Secrets and ConfigMaps; answers ``None`` for one that does not exist."""

    async def secret(self, namespace: str, name: str) -> Obj | None: ...

    async def configmap(self, namespace: str, name: str) -> Obj | None: ...


@dataclass(slots=True)
class Translated:
    """The wire entry (plain CBOR-ready object) and the blobs it references."""

    entry: dict[int, Any]
    blobs: dict[bytes, bytes] = field(default_factory=dict)
    refs: frozenset[str] = frozenset()  # "secret:ns/name", "configmap:ns/name" it read


def _b64_values(values: Any, reason: str, what: str) -> dict[str, bytes]:
    """A Secret's ``data`` or a ConfigMap's ``binaryData``, decoded; bad base64 names its key."""
    out: dict[str, bytes] = {}
    for k, v in _d(values).items():
        try:
            out[str(k)] = base64.b64decode(str(v), validate=True)
        except ValueError:
            raise TranslateError(reason, f"{what} key {k}: bad base64") from None
    return out


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


class _Refs:
    """Caches each referenced object for one translation and records what was read."""

    def __init__(self, resolver: RefResolver, namespace: str) -> None:
        self.resolver = resolver
        self.ns = namespace
        self.read: set[str] = set()
        self._cache: dict[str, Obj | None] = {}

    async def _get(self, kind: str, name: str) -> Obj | None:
        key = f"{kind}:{self.ns}/{name}"
        self.read.add(key)
        if key not in self._cache:
            if kind == "secret":
                self._cache[key] = await self.resolver.secret(self.ns, name)
            else:
                self._cache[key] = await self.resolver.configmap(self.ns, name)
        return self._cache[key]

    async def secret_data(self, name: str, *, optional: bool = False) -> dict[str, bytes] | None:
        obj = await self._get("secret", name)
        if obj is None:
            if optional:
                return None
            raise TranslateError("SecretNotFound", f'secret "{self.ns}/{name}" not found')
        out = _b64_values(obj.get("data"), "InvalidSecret", f'secret "{self.ns}/{name}"')
        for k, v in _d(obj.get("stringData")).items():
            out[str(k)] = str(v).encode()
        return out

    async def configmap_data(self, name: str, *, optional: bool = False) -> dict[str, str] | None:
        obj = await self._get("configmap", name)
        if obj is None:
            if optional:
                return None
            raise TranslateError("ConfigMapNotFound", f'configmap "{self.ns}/{name}" not found')
        return {str(k): str(v) for k, v in _d(obj.get("data")).items()}

    async def configmap_files(self, name: str) -> dict[str, bytes]:
        """A ConfigMap as volume files: ``data`` (UTF-8) and ``binaryData`` (base64)."""
        data = await self.configmap_data(name)
        assert data is not None
        out = {k: v.encode() for k, v in data.items()}
        obj = await self._get("configmap", name) or {}  # cached: no second read
        what = f'configmap "{self.ns}/{name}" binaryData'
        out.update(_b64_values(obj.get("binaryData"), "InvalidConfigMap", what))
        return out

    async def key(self, kind: str, ref: Obj, what: str) -> bytes | None:
        name, key, optional = str(ref.get("name", "")), str(ref.get("key", "")), bool(ref.get("optional"))
        if kind == "secret":
            sdata = await self.secret_data(name, optional=optional)
            value: bytes | None = None if sdata is None else sdata.get(key)
        else:
            cdata = await self.configmap_data(name, optional=optional)
            text = None if cdata is None else cdata.get(key)
            value = None if text is None else text.encode()
        if value is None and not optional:
            raise TranslateError("KeyNotFound", f'{what}: key "{key}" not found in {kind} "{self.ns}/{name}"')
        return value


async def translate_workload(workload: Obj, resolver: RefResolver) -> Translated:
    """The wire entry for one Workload. Raises :class:`TranslateError` if it cannot be built."""
    meta, spec = _d(workload.get("metadata")), _d(workload.get("spec"))
    ns = str(meta.get("namespace") or "default")
    refs = _Refs(resolver, ns)
    uid = str(meta.get("uid") or "")
    name = f"{ns}/{meta.get('name', '')}"
    generation = int(meta.get("generation") or 1)
    policy = RESTART_POLICIES.get(str(spec.get("restartPolicy") or "Always"), RestartPolicy.ALWAYS)
    runtime = spec.get("runtime")
    blobs: dict[bytes, bytes] = {}
    wl: Workload
    try:
        if runtime == "micropython":
            wl = await _micropython(uid, name, generation, policy, _d(spec.get("app")), refs, blobs)
        elif runtime == "docker":
            wl = await _docker(uid, name, generation, policy, meta, spec, refs)
        else:
            raise TranslateError("InvalidSpec", f"unsupported runtime {runtime!r}")
        entry = wl.to_obj()
        # Never hand a device what a peer following the CDDL would reject.
        DesiredDoc.from_obj({VERSION_KEY: WIRE_VERSION, 1: 0, 2: [entry]}, "desired")
        # Files travel inline: a document holding only this entry must fit the wire's limit.
        size = len(encode_value({VERSION_KEY: WIRE_VERSION, 1: 0, 2: [entry]}, max_size=None))
        if size > MAX_PAYLOAD:
            raise TranslateError(
                "TooLarge",
                f"the workload's desired entry is {size} bytes, over the wire's limit of {MAX_PAYLOAD} "
                "(secret and configMap volume files travel inline: keep them small)",
            )
    except WireError as e:
        raise TranslateError("InvalidSpec", f"cannot encode for the device: {e}") from None
    except (ValueError, TypeError) as e:
        raise TranslateError("InvalidSpec", str(e)) from None
    return Translated(entry, blobs, frozenset(refs.read))


async def _micropython(
    uid: str,
    name: str,
    generation: int,
    policy: RestartPolicy,
    app: Obj,
    refs: _Refs,
    blobs: dict[bytes, bytes],
) -> MicroPythonWorkload:
    modules: list[BlobRef] = []
    for i, m in enumerate(app.get("modules") or []):
        m = _d(m)
        fname = str(m.get("name") or "")
        data: bytes | None
        if isinstance(m.get("source"), str):
            data = str(m["source"]).encode()
        elif isinstance(m.get("configMapRef"), dict):
            data = await refs.key("configmap", m["configMapRef"], f"app.modules[{i}]")
        elif isinstance(m.get("sha256"), str):
            # Published elsewhere: the device fetches it from this gateway's blob store.
            modules.append(BlobRef(bytes.fromhex(m["sha256"]), int(m.get("size") or 0), fname))
            continue
        else:
            raise TranslateError("InvalidSpec", f"app.modules[{i}]: needs source, configMapRef or sha256")
        assert data is not None
        digest = hashlib.sha256(data).digest()
        blobs[digest] = data
        modules.append(BlobRef(digest, len(data), fname))
    config: dict[str, ConfigValue] = {}
    for k, v in _d(app.get("config")).items():
        config[str(k)] = v if v is None or isinstance(v, str | int | float | bool) else json.dumps(v)
    secrets: dict[str, bytes] = {}
    for sname in app.get("secrets") or []:
        data_map = await refs.secret_data(str(sname))
        assert data_map is not None
        secrets.update(data_map)
    return MicroPythonWorkload(
        uid,
        name,
        generation,
        entry=str(app.get("entry") or "main"),
        modules=tuple(modules),
        config=config,
        secrets=secrets,
        restart_policy=policy,
    )


async def _docker(
    uid: str, name: str, generation: int, policy: RestartPolicy, meta: Obj, spec: Obj, refs: _Refs
) -> DockerWorkload:
    if spec.get("terminationGracePeriodSeconds") is not None:
        # The agent stops containers with its own grace period (its stop_timeout).
        raise TranslateError(
            "Unsupported",
            "spec.terminationGracePeriodSeconds is not supported on devices (the agent's stop "
            "timeout applies); remove it",
        )
    network = _d(meta.get("annotations")).get(NETWORK_ANNOTATION, "host")
    if network not in NETWORK_MODES:
        raise TranslateError(
            "InvalidSpec",
            f"metadata.annotations[{NETWORK_ANNOTATION}]: {network!r} is not supported: containers "
            "use the host's network or none, never a bridge (use host or none)",
        )
    volumes = [await _volume(_d(v), i, refs) for i, v in enumerate(spec.get("volumes") or [])]
    names = [v.name for v in volumes]
    for i, vname in enumerate(names):
        if vname in names[:i]:
            raise TranslateError("InvalidSpec", f"spec.volumes[{i}]: duplicate volume name {vname!r}")
    containers = [
        await _container(_d(c), refs, f"spec.containers[{i}]", set(names))
        for i, c in enumerate(spec.get("containers") or [])
    ]
    if not containers:
        raise TranslateError("InvalidSpec", "a docker workload needs at least one container")
    return DockerWorkload(
        uid,
        name,
        generation,
        tuple(containers),
        policy,
        volumes=tuple(volumes),
        network=NETWORK_MODES[network],
    )


async def _volume(v: Obj, i: int, refs: _Refs) -> Volume:
    where = f"spec.volumes[{i}]"
    vname = str(v.get("name") or "")
    if isinstance(v.get("hostPath"), dict):
        path = str(v["hostPath"].get("path") or "")
        if not path.startswith("/"):
            raise TranslateError("InvalidSpec", f"{where}.hostPath.path: {path!r} is not an absolute path")
        return Volume(vname, host_path=path)
    if isinstance(v.get("secret"), dict):
        data = await refs.secret_data(str(v["secret"].get("secretName") or ""))
        assert data is not None
        return Volume(vname, secret=data)
    if isinstance(v.get("configMap"), dict):
        return Volume(vname, config_map=await refs.configmap_files(str(v["configMap"].get("name") or "")))
    if isinstance(v.get("emptyDir"), dict):
        if v["emptyDir"].get("sizeLimit") is not None:
            raise TranslateError(
                "Unsupported", f"{where}.emptyDir.sizeLimit: not supported on devices; remove it"
            )
        return Volume(vname)
    raise TranslateError("InvalidSpec", f"{where}: needs one of hostPath, emptyDir, secret, configMap")


async def _container(c: Obj, refs: _Refs, where: str, volumes: set[str]) -> Container:
    cname = str(c.get("name") or "")
    pull = c.get("imagePullPolicy")
    if pull is not None and pull != "IfNotPresent":
        raise TranslateError(
            "Unsupported",
            f"{where}.imagePullPolicy: {pull!r} is not supported on devices: the agent pulls an image "
            "only when it is not present (use IfNotPresent, or a new tag to update)",
        )
    mounts: list[Mount] = []
    for j, m in enumerate(c.get("volumeMounts") or []):
        m = _d(m)
        vname, path = str(m.get("name") or ""), str(m.get("mountPath") or "")
        if vname not in volumes:
            raise TranslateError(
                "InvalidSpec", f"{where}.volumeMounts[{j}]: no volume named {vname!r} in spec.volumes"
            )
        if not path.startswith("/"):
            raise TranslateError(
                "InvalidSpec", f"{where}.volumeMounts[{j}].mountPath: {path!r} is not an absolute path"
            )
        mounts.append(Mount(vname, path, bool(m.get("readOnly"))))
    env: dict[str, str] = {}
    for e in c.get("env") or []:
        e = _d(e)
        ename = str(e.get("name") or "")
        if "value" in e:
            env[ename] = str(e["value"])
            continue
        vf = _d(e.get("valueFrom"))
        kind = "secret" if "secretKeyRef" in vf else "configmap"
        ref = _d(vf.get("secretKeyRef") or vf.get("configMapKeyRef"))
        value = await refs.key(kind, ref, f"container {cname} env {ename}")
        if value is not None:
            env[ename] = value.decode(errors="replace")
        elif not ref:
            env[ename] = ""
    ports = tuple(
        Port(
            int(p["containerPort"]),
            int(p["hostPort"]) if p.get("hostPort") else None,
            "udp" if str(p.get("protocol") or "TCP").upper() == "UDP" else "tcp",
        )
        for p in (_d(x) for x in c.get("ports") or [])
    )
    named = {
        str(_d(p).get("name")): int(_d(p)["containerPort"]) for p in c.get("ports") or [] if _d(p).get("name")
    }
    limits = _d(_d(c.get("resources")).get("limits"))
    resources = None
    if limits:
        resources = Resources(
            memory=parse_bytes(limits["memory"]) if "memory" in limits else None,
            cpu=parse_cpu_millis(limits["cpu"]) if "cpu" in limits else None,
        )
    return Container(
        name=cname,
        image=str(c.get("image") or ""),
        command=tuple(str(x) for x in c.get("command") or []),
        args=tuple(str(x) for x in c.get("args") or []),
        env=env,
        ports=ports,
        resources=resources,
        liveness=_probe(c.get("livenessProbe"), named, cname),
        readiness=_probe(c.get("readinessProbe"), named, cname),
        mounts=tuple(mounts),
        working_dir=str(c["workingDir"]) if c.get("workingDir") else None,
    )


def _port_of(value: Any, named: dict[str, int], where: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, str) and value in named:
        return named[value]
    raise TranslateError("InvalidSpec", f"{where}: unknown port {value!r}")


def _probe(p: Any, named: dict[str, int], cname: str) -> Probe | None:
    if not isinstance(p, dict):
        return None
    where = f"container {cname} probe"
    exec_: tuple[str, ...] = ()
    http_get: HttpGet | None = None
    tcp_port: int | None = None
    if isinstance(p.get("exec"), dict):
        exec_ = tuple(str(x) for x in p["exec"].get("command") or [])
    elif isinstance(p.get("httpGet"), dict):
        h = p["httpGet"]
        if str(h.get("scheme") or "HTTP").upper() != "HTTP":
            raise TranslateError(
                "Unsupported", f"{where}: httpGet.scheme {h['scheme']!r} is not supported (HTTP only)"
            )
        http_get = HttpGet(str(h.get("path") or "/"), _port_of(h.get("port"), named, where))
    elif isinstance(p.get("tcpSocket"), dict):
        tcp_port = _port_of(p["tcpSocket"].get("port"), named, where)
    else:
        return None
    return Probe(
        exec=exec_,
        http_get=http_get,
        tcp_port=tcp_port,
        initial_delay=int(p.get("initialDelaySeconds") or 0),
        period=int(p.get("periodSeconds") or 0),
        timeout=int(p.get("timeoutSeconds") or 0),
        failure_threshold=int(p.get("failureThreshold") or 0),
        success_threshold=int(p.get("successThreshold") or 0),
    )


# ---- desired documents -----------------------------------------------------------------------


def sort_entries(entries: Sequence[dict[int, Any]]) -> list[dict[int, Any]]:
    """Document order: by name, then uid, so equal content always encodes to equal bytes."""
    return sorted(entries, key=lambda e: (str(e.get(2, "")), str(e.get(1, ""))))


def content_hash(entries: Sequence[dict[int, Any]]) -> bytes:
    """SHA-256 over the (sorted) workload entries: what decides whether gen must change."""
    return hashlib.sha256(encode_value(list(entries), max_size=None)).digest()


def encode_doc(gen: int, entries: Sequence[dict[int, Any]]) -> bytes:
    """The desired document's CBOR (raises WireError past the wire's size limit)."""
    obj: dict[int, Any] = {VERSION_KEY: WIRE_VERSION, 1: gen}
    if entries:
        obj[2] = list(entries)
    return encode_value(obj)


def etag_of(doc: bytes) -> bytes:
    """8-byte ETag: a prefix of the document's SHA-256 (stable across gateway restarts)."""
    return hashlib.sha256(doc).digest()[:8]


def referenced_blobs(entries: Sequence[dict[int, Any]]) -> set[bytes]:
    out: set[bytes] = set()
    for e in entries:
        for m in e.get(7) or []:
            if isinstance(m, dict) and isinstance(m.get(1), bytes):
                out.add(m[1])
    return out
