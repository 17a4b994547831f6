"""DockerRuntime: the agent's provider over the local Docker Engine.

Shaped like virtual-kubelet's PodLifecycleHandler (create/update/delete/get status/list), plus
logs, stats, exec and the single-container operations the reconciler needs. The docker SDK
is blocking, so every engine call runs on a worker thread; the event loop never waits on it.

State lives in the engine: every container carries labels naming its workload uid,
generation, container name and spec hash, so ``list_workloads`` rebuilds the whole picture
after an agent or dockerd restart. Containers get docker restart policy "no": the agent
does restarts itself, so it sees every exit code and applies its own backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from .spec import ContainerSpec, VolumeSpec, WorkloadSpec

if TYPE_CHECKING:
    from fleetlet.gateway.wire import MirrorOffer

__all__ = [
    "LABEL_CONTAINER",
    "LABEL_GENERATION",
    "LABEL_SPEC_HASH",
    "LABEL_UID",
    "ContainerInfo",
    "DockerRuntime",
    "EngineError",
    "EngineUnavailable",
    "ImageRef",
    "LogEntry",
    "container_name",
    "parse_image_ref",
    "parse_timestamp_ms",
]

log = logging.getLogger(__name__)

LABEL_UID = "fleetlet.io/workload-uid"
LABEL_NAME = "fleetlet.io/workload-name"
LABEL_GENERATION = "fleetlet.io/generation"
LABEL_CONTAINER = "fleetlet.io/container"
LABEL_SPEC_HASH = "fleetlet.io/spec-hash"

T = TypeVar("T")


class EngineUnavailable(Exception):
    """The Docker Engine does not answer (down, restarting, socket gone)."""


class EngineError(Exception):
    """The engine answered with an error (bad image, name conflict, ...); message says which."""

    def __init__(self, message: str, reason: str = "RuntimeError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One fleetlet container as the engine sees it (from inspect)."""

    id: str
    docker_name: str
    uid: str
    workload_name: str
    generation: int
    container: str
    spec_hash: str
    image: str
    status: str  # created, running, exited, restarting, paused, dead, removing
    exit_code: int
    started_at: str
    finished_at: str
    oom_killed: bool = False
    error: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting", "paused")


@dataclass(frozen=True, slots=True)
class LogEntry:
    t_ms: int  # unix milliseconds
    stream: int  # 0 stdout, 1 stderr
    text: str


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str  # "docker.io" or host[:port]
    path: str  # e.g. "library/busybox"
    tag: str = "latest"
    digest: str = ""

    def with_registry(self, registry: str) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{registry}/{self.path}{suffix}"

    @property
    def repository(self) -> str:
        """What `docker pull` needs without the tag (short form for Docker Hub)."""
        if self.registry == "docker.io":
            return self.path.removeprefix("library/")
        return f"{self.registry}/{self.path}"


_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def parse_image_ref(ref: str) -> ImageRef:
    """Split ``[registry/]path[:tag][@digest]`` the way docker does (docker.io by default)."""
    rest, _, digest = ref.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    tag = "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
    if registry in _HUB_ALIASES:
        registry = "docker.io"
        if "/" not in path:
            path = f"library/{path}"
    return ImageRef(registry=registry, path=path, tag=tag, digest=digest)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError):
        return True
    if isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError):
        # The SDK wraps "socket missing" at client creation in a plain DockerException.
        return "connection" in str(exc).lower() or "No such file" in str(exc)
    if isinstance(exc, docker.errors.APIError):
        # While dockerd shuts down it answers some calls with 5xx before the socket goes away.
        return exc.status_code in (502, 503) or "is shutting down" in str(exc)
    return False


def _registry_name(name: str) -> str:
    return "docker.io" if name in _HUB_ALIASES else name


def _valid_hostport(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536 and not any(c in text for c in "/@ ")


def choose_mirror(
    explicit: str | None, explicit_upstream: str, offer: MirrorOffer | None
) -> tuple[str, str] | None:
    """The registry mirror to pull through, as (address, upstream): the agent's own
    ``--registry-mirror`` first, else the one the gateway offered at registration, else none.
    An offer that is not ``host:port`` (or names no upstream) is ignored."""
    if explicit:
        return explicit, _registry_name(explicit_upstream)
    if offer is not None and _valid_hostport(offer.address) and offer.upstream:
        return offer.address, _registry_name(offer.upstream)
    return None


class DockerRuntime:
    """Provider over one Docker Engine. ``registry_mirror`` is ``host:port`` of a pull-through
    cache fronting ``mirror_upstream`` (``host:port`` of a registry, or ``docker.io``): the
    agent's own setting. Without one, :meth:`offer_mirror` sets the gateway's."""

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        data_dir: str | os.PathLike[str] = "/var/lib/fleetlet-agent",
        registry_mirror: str | None = None,
        mirror_upstream: str = "docker.io",
        stop_timeout: int = 10,
        api_timeout: float = 60.0,
    ) -> None:
        self.docker_host = docker_host
        self.data_dir = Path(data_dir)
        self._explicit_mirror = (registry_mirror, mirror_upstream)
        # The mirror pulls go through (None: none): the explicit one, or the gateway's offer.
        self.registry_mirror = registry_mirror
        self.mirror_upstream = _registry_name(mirror_upstream)
        self.stop_timeout = stop_timeout
        self.api_timeout = api_timeout
        self._api: docker.APIClient | None = None

    def offer_mirror(self, offer: MirrorOffer | None) -> None:
        """The gateway's registry mirror from its latest registration answer (None: it offers
        none any more). Used only when the agent has no ``--registry-mirror`` of its own."""
        chosen = choose_mirror(*self._explicit_mirror, offer)
        address, upstream = chosen if chosen is not None else (None, self.mirror_upstream)
        if (address, upstream) != (self.registry_mirror, self.mirror_upstream):
            if offer is not None and chosen is None:
                log.warning("ignoring the gateway's registry mirror %r: not host:port", offer.address)
            log.info("pulling images of %s through registry mirror %s", upstream, address or "(none)")
        self.registry_mirror, self.mirror_upstream = address, upstream

    # ------------------------------------------------------------ plumbing

    def _client(self) -> docker.APIClient:
        if self._api is None:
            kwargs: dict[str, Any] = {"timeout": self.api_timeout, "version": "auto"}
            if self.docker_host:
                kwargs["base_url"] = self.docker_host
            self._api = docker.APIClient(**kwargs)
        return self._api

    def _reset_client(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            try:
                api.close()
            except Exception:  # a broken pool may fail to close; it is dropped anyway
                pass

    async def _call(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(api)`` on a thread; engine outages become EngineUnavailable."""

        def work() -> T:
            try:
                return fn(self._client())
            except Exception as exc:
                if _is_connection_error(exc):
                    self._reset_client()
                    raise EngineUnavailable(str(exc)) from exc
                raise

        return await asyncio.to_thread(work)

    async def ping(self) -> bool:
        try:
            return bool(await self._call(lambda api: api.ping()))
        except EngineUnavailable:
            return False

    async def info(self) -> dict[str, Any]:
        return await self._call(lambda api: dict(api.info()))

    def close(self) -> None:
        self._reset_client()

    # ------------------------------------------------------------ PodLifecycleHandler shape

    async def create_workload(self, spec: WorkloadSpec) -> list[ContainerInfo]:
        """Pull images, prepare volumes, then create and start every container (all or none)."""
        await self.create_containers(spec, spec.containers)
        return await self.get_workload_status(spec.uid)

    async def create_containers(self, spec: WorkloadSpec, containers: Sequence[ContainerSpec]) -> None:
        """Create and start some containers of ``spec``; on failure none of them is left behind."""
        for c in containers:
            await self.ensure_image(c.image)
        prepared = await asyncio.to_thread(self._prepare_volumes, spec)
        created: list[str] = []
        try:
            for c in containers:
                created.append(await self._create_container(spec, c, prepared))
            for cid in created:
                await self._call(lambda api, cid=cid: api.start(cid))  # type: ignore[misc]
        except Exception:
            for cid in created:
                with contextlib.suppress(Exception):
                    await self._remove(cid, grace=0)
            raise

    async def update_workload(self, spec: WorkloadSpec) -> list[ContainerInfo]:
        """Replace every container of the workload together (pull first, so the gap is short)."""
        for c in spec.containers:
            await self.ensure_image(c.image)
        await self._remove_workload_containers(spec.uid)
        return await self.create_workload(spec)

    async def delete_workload(self, uid: str) -> None:
        await self._remove_workload_containers(uid)
        await asyncio.to_thread(shutil.rmtree, self._workload_dir(uid), True)

    async def get_workload_status(self, uid: str) -> list[ContainerInfo]:
        return (await self.list_workloads(uid)).get(uid, [])

    async def list_workloads(self, uid: str | None = None) -> dict[str, list[ContainerInfo]]:
        """Every fleetlet container (only those carrying our labels), grouped by workload uid."""
        label = f"{LABEL_UID}={uid}" if uid else LABEL_UID

        def work(api: docker.APIClient) -> list[dict[str, Any]]:
            out = []
            for summary in api.containers(all=True, filters={"label": label}):
                try:
                    out.append(api.inspect_container(summary["Id"]))
                except docker.errors.NotFound:  # removed between list and inspect
                    continue
            return out

        grouped: dict[str, list[ContainerInfo]] = {}
        for attrs in await self._call(work):
            info = _info(attrs)
            grouped.setdefault(info.uid, []).append(info)
        return grouped

    # ------------------------------------------------------------ single containers

    async def start_container(self, cid: str) -> None:
        await self._call(lambda api: api.start(cid))

    async def stop_container(self, cid: str, grace: int | None = None) -> None:
        t = self.stop_timeout if grace is None else grace
        await self._call(lambda api: api.stop(cid, timeout=t))

    async def inspect(self, cid: str) -> ContainerInfo | None:
        try:
            return _info(await self._call(lambda api: api.inspect_container(cid)))
        except docker.errors.NotFound:
            return None

    async def remove_container(self, cid: str) -> None:
        await self._remove(cid, grace=self.stop_timeout)

    async def exec(self, cid: str, command: list[str]) -> tuple[int, bytes]:
        """Run ``command`` in the container; (exit code, output). Callers bound the time."""

        def work(api: docker.APIClient) -> tuple[int, bytes]:
            ex = api.exec_create(cid, command, stdout=True, stderr=True)
            output = api.exec_start(ex["Id"])
            code = api.exec_inspect(ex["Id"]).get("ExitCode")
            return (code if isinstance(code, int) else -1, bytes(output or b""))

        return await self._call(work)

    async def logs(self, uid: str, container: str, tail: int = 100) -> list[LogEntry]:
        """The last ``tail`` lines of one container, stdout and stderr merged in time order."""
        infos = [i for i in await self.get_workload_status(uid) if i.container == container]
        if not infos:
            return []
        cid = infos[0].id

        def work(api: docker.APIClient) -> list[LogEntry]:
            entries: list[LogEntry] = []
            for stream, flags in ((0, (True, False)), (1, (False, True))):
                raw = api.logs(cid, stdout=flags[0], stderr=flags[1], timestamps=True, tail=tail)
                for line in raw.decode("utf-8", errors="replace").splitlines():
                    stamp, _, text = line.partition(" ")
                    entries.append(LogEntry(parse_timestamp_ms(stamp), stream, text))
            entries.sort(key=lambda e: e.t_ms)
            return entries[-tail:] if tail > 0 else entries

        return await self._call(work)

    async def stats(self, cid: str) -> dict[str, Any]:
        """One-shot raw stats (no 1 s priming wait); CPU % is computed from two samples by status."""
        return await self._call(lambda api: dict(api.stats(cid, stream=False, one_shot=True)))

    # ------------------------------------------------------------ images

    async def ensure_image(self, ref: str) -> None:
        """Pull ``ref`` unless present (IfNotPresent: devices keep bandwidth for what changed)."""
        if await self.image_present(ref):
            return
        await self.pull(ref)

    async def image_present(self, ref: str) -> bool:
        try:
            await self._call(lambda api: api.inspect_image(ref))
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False

    async def pull(self, ref: str) -> None:
        """Pull ``ref``; through the mirror when it fronts that registry (tagged back to ``ref``)."""
        parsed = parse_image_ref(ref)
        # Digest refs cannot be tagged back under their own name, so they go direct.
        if self.registry_mirror and parsed.registry == self.mirror_upstream and not parsed.digest:
            via = parsed.with_registry(self.registry_mirror)
            try:
                await self._pull_exact(via)
            except EngineError as exc:
                # A broken mirror must not stop deployments: fall back to the registry itself.
                log.warning("pull of %s through mirror %s failed (%s); pulling directly", ref, via, exc)
            else:
                await self._call(lambda api: api.tag(via, parsed.repository, parsed.tag))
                # Drop the mirror's name; the image stays under its own name.
                await self._call(lambda api: api.remove_image(via, noprune=True))
                return
        await self._pull_exact(ref)

    async def _pull_exact(self, ref: str) -> None:
        def work(api: docker.APIClient) -> None:
            try:
                # The SDK splits repository, tag and digest itself.
                for event in api.pull(ref, stream=True, decode=True):
                    if isinstance(event, dict) and event.get("error"):
                        raise EngineError(f"pull {ref}: {event['error']}", "ErrImagePull")
            except docker.errors.APIError as exc:
                if _is_connection_error(exc):
                    raise
                raise EngineError(f"pull {ref}: {exc.explanation or exc}", "ErrImagePull") from exc

        await self._call(work)

    async def list_images(self) -> list[dict[str, Any]]:
        return await self._call(lambda api: [dict(i) for i in api.images()])

    async def images_in_use(self) -> set[str]:
        """Image ids referenced by any container (running or not), fleetlet's or not."""

        def work(api: docker.APIClient) -> set[str]:
            return {str(c["ImageID"]) for c in api.containers(all=True)}

        return await self._call(work)

    async def remove_image(self, image_id: str) -> None:
        await self._call(lambda api: api.remove_image(image_id, force=False))

    async def inspect_image(self, ref: str) -> dict[str, Any]:
        return await self._call(lambda api: dict(api.inspect_image(ref)))

    # ------------------------------------------------------------ internals

    def _workload_dir(self, uid: str) -> Path:
        return self.data_dir / "workloads" / uid

    def _prepare_volumes(self, spec: WorkloadSpec) -> dict[str, str]:
        """Create emptyDir / secret / configMap dirs; returns volume name -> host path."""
        paths: dict[str, str] = {}
        for vol in spec.volumes:
            paths[vol.name] = self._prepare_volume(spec.uid, vol)
        return paths

    def _prepare_volume(self, uid: str, vol: VolumeSpec) -> str:
        if vol.kind == "hostPath":
            return vol.host_path
        target = self._workload_dir(uid) / "volumes" / vol.name
        if vol.kind == "emptyDir":
            target.mkdir(parents=True, exist_ok=True)
            return str(target)
        # secret / configMap: rewritten in full each time, so a removed key disappears too.
        secret = vol.kind == "secret"
        tmp = target.with_name(f".{vol.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, mode=0o700 if secret else 0o755)
        for fname, data in vol.files.items():
            if "/" in fname or fname in (".", ".."):
                raise EngineError(f"volume {vol.name}: bad file name {fname!r}", "InvalidVolume")
            fd = os.open(tmp / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return str(target)

    async def _create_container(
        self, spec: WorkloadSpec, c: ContainerSpec, volumes: Mapping[str, str]
    ) -> str:
        name = container_name(spec, c.name)
        labels = {
            LABEL_UID: spec.uid,
            LABEL_NAME: spec.name,
            LABEL_GENERATION: str(spec.generation),
            LABEL_CONTAINER: c.name,
            LABEL_SPEC_HASH: spec.spec_hash(),
        }
        binds = []
        ro_kinds = {v.name for v in spec.volumes if v.kind in ("secret", "configMap")}
        for m in c.mounts:
            mode = "ro" if m.read_only or m.name in ro_kinds else "rw"
            binds.append(f"{volumes[m.name]}:{m.mount_path}:{mode}")

        def work(api: docker.APIClient) -> str:
            host_config = api.create_host_config(
                network_mode=spec.network_mode,
                binds=binds or None,
                mem_limit=c.memory,
                # Same as the memory limit: no extra swap, as in Kubernetes.
                memswap_limit=c.memory,
                nano_cpus=c.cpu_millis * 1_000_000 if c.cpu_millis else None,
                restart_policy={"Name": "no"},
                # tini as PID 1 forwards SIGTERM, so stops are quick and zombies reaped.
                init=True,
            )
            try:
                created = api.create_container(
                    c.image,
                    name=name,
                    command=list(c.args) if (c.args or c.command) else None,
                    entrypoint=list(c.command) or None,
                    environment=dict(c.env),
                    labels=labels,
                    working_dir=c.working_dir or None,
                    host_config=host_config,
                )
            except docker.errors.APIError as exc:
                if _is_connection_error(exc):
                    raise
                if exc.status_code == 409:
                    # A leftover with our name (e.g. half-done update before a crash): replace it.
                    api.remove_container(name, force=True)
                    return work(api)
                raise EngineError(f"create {name}: {exc.explanation or exc}", "CreateContainerError") from exc
            return str(created["Id"])

        return await self._call(work)

    async def _remove_workload_containers(self, uid: str) -> None:
        infos = await self.get_workload_status(uid)
        # Stop them concurrently: the workload goes down as one.
        await asyncio.gather(*(self._remove(i.id, grace=self.stop_timeout) for i in infos))

    async def _remove(self, cid: str, grace: int) -> None:
        def work(api: docker.APIClient) -> None:
            try:
                if grace > 0:
                    api.stop(cid, timeout=grace)
                api.remove_container(cid, force=True, v=True)
            except docker.errors.NotFound:
                pass

        await self._call(work)


def container_name(spec: WorkloadSpec, container: str) -> str:
    return f"fleetlet_{spec.short_name}_{container}_{spec.uid[:8]}"


def _info(attrs: Mapping[str, Any]) -> ContainerInfo:
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State") or {}
    try:
        generation = int(labels.get(LABEL_GENERATION, "0"))
    except ValueError:
        generation = 0
    return ContainerInfo(
        id=str(attrs["Id"]),
        docker_name=str(attrs.get("Name", "")).lstrip("/"),
        uid=labels.get(LABEL_UID, ""),
        workload_name=labels.get(LABEL_NAME, ""),
        generation=generation,
        container=labels.get(LABEL_CONTAINER, ""),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        image=str(attrs.get("Config", {}).get("Image", "")),
        status=str(state.get("Status", "unknown")),
        exit_code=int(state.get("ExitCode") or 0),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
    )


def parse_timestamp_ms(stamp: str) -> int:
    """Docker's RFC 3339 nanosecond timestamps -> unix ms (0 if unparseable)."""
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        dt = datetime.fromisoformat(head + "+00:00")
        return int(dt.timestamp() * 1000) + int((frac + "000")[:3])
    except ValueError:
        return 0
