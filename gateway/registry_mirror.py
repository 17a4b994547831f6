"""The gateway's registry mirror: a pull-through cache in front of one upstream registry.

It runs Debian's ``docker-registry`` (CNCF distribution 2.8) with ``proxy.remoteurl`` set, so
the N devices behind one gateway fetch each blob from upstream once; later pulls are served
from the gateway's disk. Devices reach it as ``<gateway>:<port>`` (plain HTTP; dockerd treats
loopback as insecure by default, other addresses need ``insecure-registries`` on the device).

    mirror = RegistryMirror("https://registry-1.docker.io", data_dir / "registry-mirror")
    await mirror.start()
    ...  # mirror.address == "127.0.0.1:5001"
    await mirror.stop()

The mirror is supervised: distribution's proxy mode exits at startup when the upstream does not
answer (a gateway booting while its site is offline), and a cache can crash later. Neither may
take the gateway down: ``start()`` returns once the mirror answers or its first attempt failed,
and a background task restarts ``docker-registry`` with backoff (1 s doubling to 60 s) until it
runs. Meanwhile agents fall back to pulling from the registry itself.

The gateway offers the mirror to every device in its registration answer (``registered``
key 4, schemas/wire/registration.cddl): :meth:`RegistryMirror.offer_for` names the address
the device reaches it at, the gateway's own address on the interface the device registered
to plus the mirror's port (see :func:`advertised_address`). SBC agents pull through it unless
configured with a mirror of their own; the MicroPython firmware ignores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml

from .wire import MirrorOffer

__all__ = [
    "DEFAULT_UPSTREAM",
    "RegistryMirror",
    "RegistryMirrorError",
    "advertised_address",
    "find_registry_binary",
]

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://registry-1.docker.io"
_CANDIDATES = ("/usr/bin/docker-registry", "docker-registry", "registry")


class RegistryMirrorError(Exception):
    """The mirror could not be configured or started; the message says why."""


def find_registry_binary() -> str | None:
    for cand in _CANDIDATES:
        found = cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else shutil.which(cand)
        if found:
            return found
    return None


class RegistryMirror:
    """Writes a config.yml for ``docker-registry serve`` and runs it as a child process."""

    def __init__(
        self,
        upstream_url: str = DEFAULT_UPSTREAM,
        data_dir: str | os.PathLike[str] = "/var/lib/fleetlet-gateway/registry-mirror",
        listen: str = "127.0.0.1:5001",
        *,
        binary: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ttl: str | None = None,
    ) -> None:
        parts = urlsplit(upstream_url if "://" in upstream_url else f"https://{upstream_url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryMirrorError(
                f"registry mirror upstream must be an http(s) URL, got {upstream_url!r}"
            )
        self.upstream_url = f"{parts.scheme}://{parts.netloc}"
        self.data_dir = Path(data_dir)
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise RegistryMirrorError(f"listen must be HOST:PORT, got {listen!r}")
        if int(port) == 0:
            port = str(_free_port(host))
        self.listen = f"{host}:{port}"
        self.binary = binary
        self.username = username
        self.password = password
        self.ttl = ttl  # how long cached blobs stay (distribution default: 168h)
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: Any = None
        self._supervisor: asyncio.Task[None] | None = None
        self.starts = 0  # how many times docker-registry was started
        self.last_error = ""

    @property
    def address(self) -> str:
        """``host:port`` to use as an image-name prefix or a daemon ``registry-mirrors`` entry."""
        return self.listen

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def upstream_host(self) -> str:
        """The registry this mirror fronts, as it appears in image references."""
        netloc = urlsplit(self.upstream_url).netloc
        return "docker.io" if netloc in ("registry-1.docker.io", "index.docker.io", "docker.io") else netloc

    def offer_for(self, peer: str, coap_host: str = "") -> MirrorOffer | None:
        """What to tell a device registering from ``peer`` (its host address) over CoAP bound
        to ``coap_host``; None when it cannot reach the mirror (see :func:`advertised_address`)."""
        address = advertised_address(self.listen, peer, coap_host)
        return None if address is None else MirrorOffer(address, self.upstream_host)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "registry.log"

    def config(self) -> dict[str, Any]:
        proxy: dict[str, Any] = {"remoteurl": self.upstream_url}
        if self.username:
            proxy["username"] = self.username
            proxy["password"] = self.password or ""
        if self.ttl:
            proxy["ttl"] = self.ttl
        return {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": "fleetlet-registry-mirror"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir / "storage")},
                "cache": {"blobdescriptor": "inmemory"},
                # The scheduler of the proxy expires cached content; deletes must be allowed.
                "delete": {"enabled": True},
            },
            "http": {"addr": self.listen, "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "proxy": proxy,
        }

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        # 0600: the file may hold upstream credentials.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(self.config(), fh, sort_keys=False)
        os.replace(tmp, self.config_path)
        return self.config_path

    async def start(self, ready_within: float = 30.0) -> None:
        """Start (and keep restarting) docker-registry; return once it answers or first failed.

        Raises RegistryMirrorError only for what a retry cannot fix: no docker-registry binary.
        """
        if self._supervisor is not None:
            raise RegistryMirrorError("registry mirror already running")
        binary = self.binary or find_registry_binary()
        if binary is None:
            raise RegistryMirrorError(
                "docker-registry not found (install the Debian package docker-registry)"
            )
        config = await asyncio.to_thread(self.write_config)
        self._log_file = await asyncio.to_thread(open, self.log_path, "ab")
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(
            self._supervise(binary, config, ready_within, first), name="registry mirror"
        )
        await asyncio.shield(first)

    async def _supervise(
        self, binary: str, config: Path, ready_within: float, first: asyncio.Future[None]
    ) -> None:
        delay = 1.0
        try:
            while True:
                try:
                    await self._spawn(binary, config)
                    await self._wait_ready(ready_within)
                except (RegistryMirrorError, OSError) as exc:
                    self.last_error = str(exc)
                    log.warning("registry mirror not running: %s; retrying in %.0fs", exc, delay)
                    await self._terminate()
                else:
                    self.last_error = ""
                    delay = 1.0
                    log.info("registry mirror for %s listening on %s", self.upstream_url, self.url)
                    if not first.done():
                        first.set_result(None)
                    assert self._proc is not None
                    code = await self._proc.wait()
                    self.last_error = f"docker-registry exited with code {code}: {self.log_tail(5)}"
                    log.warning("registry mirror stopped (%s); restarting", self.last_error)
                if not first.done():
                    first.set_result(None)  # the gateway goes on; this task keeps trying
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)
        finally:
            if not first.done():
                first.cancel()

    async def _spawn(self, binary: str, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.starts += 1
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "serve",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    async def _wait_ready(self, ready_within: float) -> None:
        deadline = time.monotonic() + ready_within
        async with aiohttp.ClientSession(trust_env=False) as session:
            while True:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise RegistryMirrorError(
                        f"docker-registry exited with code {self._proc.returncode}: {self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/v2/", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status in (200, 401):
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RegistryMirrorError(
                        f"docker-registry not answering on {self.url}: {self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def stop(self, grace: float = 10.0) -> None:
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._terminate(grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def _terminate(self, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def __aenter__(self) -> RegistryMirror:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


_WILDCARDS = ("", "0.0.0.0", "::")


def _split_hostport(text: str) -> tuple[str, str]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), port


def _join_hostport(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _local_address_toward(peer: str) -> str | None:
    """The address this host sends from to reach ``peer``: the kernel's route lookup for a
    connected UDP socket (connect() on UDP sends nothing). On the interface a device's packets
    arrive at, that is the gateway's own address the device registered to."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(peer).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))
            return str(s.getsockname()[0])
    except (OSError, ValueError):
        return None


def advertised_address(mirror_listen: str, peer: str, coap_host: str = "") -> str | None:
    """``host:port`` at which a device at ``peer`` reaches a mirror listening on ``mirror_listen``.

    - The mirror on a wildcard address: the address the device registered to, that is CoAP's
      own host when it is bound to one, else the gateway's address on the interface toward
      the device, with the mirror's port.
    - The mirror on one address: that address, except a loopback one for a device elsewhere
      (it could not reach it): None, so the device pulls from the registry itself.
    """
    host, port = _split_hostport(mirror_listen)
    if host not in _WILDCARDS:
        if _is_loopback(host) and not _is_loopback(peer):
            return None
        return _join_hostport(host, port)
    local = coap_host.strip("[]") if coap_host.strip("[]") not in _WILDCARDS else _local_address_toward(peer)
    return None if not local else _join_hostport(local, port)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
