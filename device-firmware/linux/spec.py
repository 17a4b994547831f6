"""The agent's own model of a docker workload, and converters into it.

Two sources feed it: the wire desired document (``fleetlet.gateway.wire.DockerWorkload``) and
API-shaped Workload manifests (``spec.containers[...]``, used by tests, local runs and compose).
Secrets arrive resolved: env values, or files for ``secret`` volumes (from either source).

The spec hash covers everything that shapes a container (every container of the workload, its
volumes, its network and the *digest* of secret contents), so a workload is replaced as a whole
when any of it changes, and an agent restart can tell "same spec" from "stale spec" by labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fleetlet.hardware.quantity import QuantityError, parse_bytes, parse_cpu_millis

__all__ = [
    "ContainerSpec",
    "PortSpec",
    "ProbeSpec",
    "RestartPolicy",
    "SpecError",
    "VolumeMountSpec",
    "VolumeSpec",
    "WorkloadSpec",
    "from_manifest",
    "from_wire",
]

RestartPolicy = Literal["Always", "OnFailure", "Never"]
NetworkMode = Literal["host", "none"]
ProbeKind = Literal["exec", "http", "tcp"]
VolumeKind = Literal["hostPath", "emptyDir", "secret", "configMap"]

NETWORK_ANNOTATION = "fleetlet.io/network-mode"


class SpecError(ValueError):
    """A workload the agent cannot run; the message names the field."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    kind: ProbeKind
    command: tuple[str, ...] = ()  # exec
    path: str = "/"  # http
    port: int = 0  # http, tcp
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True, slots=True)
class PortSpec:
    container_port: int
    host_port: int | None = None
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True, slots=True)
class VolumeMountSpec:
    name: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    name: str
    kind: VolumeKind
    host_path: str = ""
    # secret / configMap: resolved file contents (file name -> bytes). Secrets land with mode 0600.
    # Out of the repr, so a logged spec never shows secret values.
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    memory: int | None = None  # limit, bytes
    cpu_millis: int | None = None  # limit, millicores
    liveness: ProbeSpec | None = None
    readiness: ProbeSpec | None = None
    mounts: tuple[VolumeMountSpec, ...] = ()
    working_dir: str = ""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    uid: str
    name: str  # namespace/name
    generation: int
    containers: tuple[ContainerSpec, ...]
    restart_policy: RestartPolicy = "Always"
    volumes: tuple[VolumeSpec, ...] = ()
    network_mode: NetworkMode = "host"

    @property
    def short_name(self) -> str:
        """The name part of namespace/name, safe for container names."""
        base = self.name.rsplit("/", 1)[-1]
        return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in base) or "workload"

    def container(self, name: str) -> ContainerSpec | None:
        return next((c for c in self.containers if c.name == name), None)

    def spec_hash(self) -> str:
        """Digest of everything that shapes the containers (not generation or restart policy)."""
        vols = []
        for v in self.volumes:
            files = {k: hashlib.sha256(data).hexdigest() for k, data in sorted(v.files.items())}
            vols.append({"name": v.name, "kind": v.kind, "hostPath": v.host_path, "files": files})
        doc = {
            "containers": [_plain(asdict(c)) for c in self.containers],
            "volumes": vols,
            "network": self.network_mode,
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def validate(self) -> WorkloadSpec:
        if not self.containers:
            raise SpecError(f"workload {self.name}: spec.containers: at least one container is required")
        names = [c.name for c in self.containers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"workload {self.name}: spec.containers: duplicate names: {', '.join(dup)}")
        vol_names = {v.name for v in self.volumes}
        for j, v in enumerate(self.volumes):
            # Volume names become folder names under the data dir; host paths go into binds.
            if not v.name or "/" in v.name or v.name in (".", ".."):
                raise SpecError(
                    f"workload {self.name}: spec.volumes[{j}].name: {v.name!r} is not a valid name"
                )
            if v.kind == "hostPath" and (not v.host_path.startswith("/") or ":" in v.host_path):
                raise SpecError(
                    f"workload {self.name}: spec.volumes[{j}].hostPath: {v.host_path!r} must be an "
                    "absolute path without ':'"
                )
        for i, c in enumerate(self.containers):
            for m in c.mounts:
                if m.name not in vol_names:
                    raise SpecError(
                        f"workload {self.name}: spec.containers[{i}].volumeMounts: no volume named {m.name!r}"
                    )
                if not m.mount_path.startswith("/") or ":" in m.mount_path:
                    raise SpecError(
                        f"workload {self.name}: spec.containers[{i}].volumeMounts: mount path "
                        f"{m.mount_path!r} must be an absolute path without ':'"
                    )
        if self.network_mode not in ("host", "none"):
            raise SpecError(f"workload {self.name}: network mode must be host or none")
        return self


def _plain(obj: Any) -> Any:
    """JSON-able form of asdict() output (tuples and mappings normalized)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------- from the wire


_WIRE_POLICY: dict[int, RestartPolicy] = {0: "Always", 1: "OnFailure", 2: "Never"}


_WIRE_NETWORK: dict[int, NetworkMode] = {0: "host", 1: "none"}


def from_wire(wl: Any) -> WorkloadSpec:
    """Convert a ``fleetlet.gateway.wire.DockerWorkload``; wire zeros mean the runtime default.

    Volumes arrive resolved: secret / configMap files inline (the gateway read them), host
    paths and emptyDirs by name. The same manifest gives the same spec (and spec hash) whether
    it came from the gateway or from :func:`from_manifest`.
    """
    try:
        network = _WIRE_NETWORK[int(wl.network)]
    except KeyError:
        raise SpecError(f"workload {wl.name}: network mode {int(wl.network)} is not host or none") from None
    volumes = tuple(_wire_volume(v) for v in wl.volumes)
    containers = []
    for c in wl.containers:
        res = c.resources
        containers.append(
            ContainerSpec(
                name=c.name,
                image=c.image,
                command=tuple(c.command),
                args=tuple(c.args),
                env=dict(c.env),
                ports=tuple(PortSpec(p.container, p.host, p.protocol) for p in c.ports),
                memory=res.memory if res is not None else None,
                cpu_millis=res.cpu if res is not None else None,
                liveness=_wire_probe(c.liveness),
                readiness=_wire_probe(c.readiness),
                mounts=tuple(VolumeMountSpec(m.volume, m.path, m.read_only) for m in c.mounts),
                working_dir=c.working_dir or "",
            )
        )
    return WorkloadSpec(
        uid=wl.uid,
        name=wl.name,
        generation=wl.generation,
        containers=tuple(containers),
        restart_policy=_WIRE_POLICY[int(wl.restart_policy)],
        volumes=volumes,
        network_mode=network,
    ).validate()


def _wire_volume(v: Any) -> VolumeSpec:
    if v.host_path is not None:
        return VolumeSpec(v.name, "hostPath", host_path=v.host_path)
    if v.secret is not None:
        return VolumeSpec(v.name, "secret", files=dict(v.secret))
    if v.config_map is not None:
        return VolumeSpec(v.name, "configMap", files=dict(v.config_map))
    return VolumeSpec(v.name, "emptyDir")


def _wire_probe(p: Any) -> ProbeSpec | None:
    if p is None:
        return None
    if p.exec:
        kind: ProbeKind = "exec"
    elif p.http_get is not None:
        kind = "http"
    else:
        kind = "tcp"
    return ProbeSpec(
        kind=kind,
        command=tuple(p.exec),
        path=p.http_get.path if p.http_get is not None else "/",
        port=p.http_get.port if p.http_get is not None else (p.tcp_port or 0),
        initial_delay=float(p.initial_delay),
        period=float(p.period or 10),
        timeout=float(p.timeout or 1),
        failure_threshold=p.failure_threshold or 3,
        success_threshold=p.success_threshold or 1,
    )


# ---------------------------------------------------------------- from an API manifest


def from_manifest(
    obj: Mapping[str, Any],
    *,
    secrets: Mapping[str, Mapping[str, bytes]] | None = None,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> WorkloadSpec:
    """Convert an API Workload (``runtime: docker``). ``secrets``/``config_maps`` resolve refs.

    Fractional probe timings (``periodSeconds: 0.2``) are accepted so tests can run fast.
    """
    secrets = secrets or {}
    config_maps = config_maps or {}
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if spec.get("runtime", "docker") != "docker":
        raise SpecError(f"spec.runtime: the SBC agent runs docker workloads, got {spec.get('runtime')!r}")
    ns = meta.get("namespace", "default")
    name = meta.get("name") or "workload"
    uid = meta.get("uid") or hashlib.sha256(f"{ns}/{name}".encode()).hexdigest()[:32]
    network = (meta.get("annotations") or {}).get(NETWORK_ANNOTATION, "host")
    if network not in ("host", "none"):
        raise SpecError(
            f"metadata.annotations[{NETWORK_ANNOTATION}]: must be 'host' or 'none' "
            f"(bridge networks are not used on devices), got {network!r}"
        )
    containers = tuple(
        _manifest_container(c, f"spec.containers[{i}]", secrets, config_maps)
        for i, c in enumerate(spec.get("containers") or [])
    )
    volumes = tuple(
        _manifest_volume(v, f"spec.volumes[{i}]", secrets, config_maps)
        for i, v in enumerate(spec.get("volumes") or [])
    )
    return WorkloadSpec(
        uid=str(uid),
        name=f"{ns}/{name}",
        generation=int(meta.get("generation") or 1),
        containers=containers,
        restart_policy=spec.get("restartPolicy", "Always"),
        volumes=volumes,
        network_mode=network,
    ).validate()


def _manifest_container(
    c: Mapping[str, Any],
    path: str,
    secrets: Mapping[str, Mapping[str, bytes]],
    config_maps: Mapping[str, Mapping[str, str]],
) -> ContainerSpec:
    env: dict[str, str] = {}
    for j, e in enumerate(c.get("env") or []):
        env[e["name"]] = _env_value(e, f"{path}.env[{j}]", secrets, config_maps)
    limits = (c.get("resources") or {}).get("limits") or {}
    try:
        memory = parse_bytes(limits["memory"]) if "memory" in limits else None
        cpu = parse_cpu_millis(limits["cpu"]) if "cpu" in limits else None
    except QuantityError as exc:
        raise SpecError(f"{path}.resources.limits: {exc}") from None
    ports = tuple(
        PortSpec(
            int(p["containerPort"]),
            int(p["hostPort"]) if "hostPort" in p else None,
            "udp" if str(p.get("protocol", "TCP")).upper() == "UDP" else "tcp",
        )
        for p in c.get("ports") or []
    )
    mounts = tuple(
        VolumeMountSpec(m["name"], m["mountPath"], bool(m.get("readOnly", False)))
        for m in c.get("volumeMounts") or []
    )
    return ContainerSpec(
        name=str(c["name"]),
        image=str(c["image"]),
        command=tuple(c.get("command") or ()),
        args=tuple(c.get("args") or ()),
        env=env,
        ports=ports,
        memory=memory,
        cpu_millis=cpu,
        liveness=_manifest_probe(c.get("livenessProbe"), f"{path}.livenessProbe"),
        readiness=_manifest_probe(c.get("readinessProbe"), f"{path}.readinessProbe"),
        mounts=mounts,
        working_dir=str(c.get("workingDir") or ""),
    )


def _env_value(
    e: Mapping[str, Any],
    path: str,
    secrets: Mapping[str, Mapping[str, bytes]],
    config_maps: Mapping[str, Mapping[str, str]],
) -> str:
    if "value" in e:
        return str(e["value"])
    src = e.get("valueFrom") or {}
    if "secretKeyRef" in src:
        ref = src["secretKeyRef"]
        data = secrets.get(ref["name"], {})
        if ref["key"] not in data:
            if ref.get("optional"):
                return ""
            raise SpecError(
                f"{path}.valueFrom.secretKeyRef: secret {ref['name']!r} has no key {ref['key']!r}"
            )
        return data[ref["key"]].decode()
    if "configMapKeyRef" in src:
        ref = src["configMapKeyRef"]
        cm = config_maps.get(ref["name"], {})
        if ref["key"] not in cm:
            if ref.get("optional"):
                return ""
            raise SpecError(
                f"{path}.valueFrom.configMapKeyRef: configmap {ref['name']!r} has no key {ref['key']!r}"
            )
        return cm[ref["key"]]
    return ""


def _manifest_volume(
    v: Mapping[str, Any],
    path: str,
    secrets: Mapping[str, Mapping[str, bytes]],
    config_maps: Mapping[str, Mapping[str, str]],
) -> VolumeSpec:
    name = str(v["name"])
    if "hostPath" in v:
        return VolumeSpec(name, "hostPath", host_path=str(v["hostPath"]["path"]))
    if "secret" in v:
        ref = v["secret"]["secretName"]
        if ref not in secrets:
            raise SpecError(f"{path}.secret.secretName: secret {ref!r} was not resolved")
        return VolumeSpec(name, "secret", files=dict(secrets[ref]))
    if "configMap" in v:
        ref = v["configMap"]["name"]
        if ref not in config_maps:
            raise SpecError(f"{path}.configMap.name: configmap {ref!r} was not resolved")
        return VolumeSpec(name, "configMap", files={k: s.encode() for k, s in config_maps[ref].items()})
    return VolumeSpec(name, "emptyDir")


def _manifest_probe(p: Mapping[str, Any] | None, path: str) -> ProbeSpec | None:
    if not p:
        return None
    timing: dict[str, Any] = {
        "initial_delay": float(p.get("initialDelaySeconds", 0)),
        "period": float(p.get("periodSeconds", 10)),
        "timeout": float(p.get("timeoutSeconds", 1)),
        "failure_threshold": int(p.get("failureThreshold", 3)),
        "success_threshold": int(p.get("successThreshold", 1)),
    }
    if "exec" in p:
        return ProbeSpec("exec", command=tuple(p["exec"]["command"]), **timing)
    if "httpGet" in p:
        return ProbeSpec(
            "http", path=str(p["httpGet"].get("path", "/")), port=_port(p["httpGet"], path), **timing
        )
    if "tcpSocket" in p:
        return ProbeSpec("tcp", port=_port(p["tcpSocket"], path), **timing)
    raise SpecError(f"{path}: needs one of exec, httpGet, tcpSocket")


def _port(obj: Mapping[str, Any], path: str) -> int:
    port = obj.get("port")
    if isinstance(port, int) and 0 < port < 65536:
        return port
    # Named ports would need the container's port names; devices keep it to numbers.
    raise SpecError(f"{path}: port must be a number 1..65535, got {port!r}")
