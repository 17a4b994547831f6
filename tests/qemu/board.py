"""An emulated aarch64 board: ``qemu-system-aarch64 -M virt`` (TCG) booting the cached image.

    board = Board(image, workdir, qemu_bin, shares={"wheels": wheelhouse},
                  tcp_to_host={8080: server_port}, udp_to_host={5683: gateway_port},
                  udp_from_host={host_port: 5683})
    board.start()                                   # boot; returns when the guest answers
    board.run("uname -m").stdout                    # a command under the board's shell
    pid = board.spawn(["/opt/fleetlet/bin/fleetlet", "gateway", ...], "gateway")
    board.log("gateway")                            # its output, read through the 9p share
    board.stop()

Networking is QEMU user networking with ``restrict=on``: the guest reaches nothing but the
explicit forwards, all of them to the host's 127.0.0.1.

* ``tcp_to_host``: guest ``10.0.2.100:P`` -> host ``127.0.0.1:Q`` (a ``guestfwd`` with a
  ``cmd:`` end, tests/qemu/fwd.py, so that every guest connection gets its own pipe).
* ``udp_to_host``: guest ``127.0.0.1:P/udp`` -> host ``127.0.0.1:Q/udp``. slirp forwards
  guest TCP only, so guest/udp_shim.py frames the datagrams over a guestfwd TCP connection
  and fwd.py (udp mode) turns them back into datagrams on the host.
* ``udp_from_host``: host ``127.0.0.1:P/udp`` -> guest ``127.0.0.1:Q/udp``. A plain UDP
  ``hostfwd`` delivers the datagrams, but slirp in ``restrict=on`` mode drops the guest's
  answers; so the host runs udp_shim.py (out) on P, framing datagrams over a TCP
  ``hostfwd`` to guest TCP port Q + 20000, where udp_shim.py (in) turns them back into
  datagrams to 127.0.0.1:Q.

The harness talks to the board through guest/guestd.py (a ``hostfwd`` TCP port). The host
directory ``share`` is the 9p tag ``host0`` at ``/mnt/host`` (boot.sh, guestd.py, logs/);
each extra entry of ``shares`` is mounted read-only at ``/mnt/<tag>``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures import LOOPBACK, ServerProcess, free_tcp_port

from .image import GUEST_DIR, BoardImage, build_rootfs, ensure_image

__all__ = ["FWD_ADDR", "Board", "BootError", "GuestResult", "build_rootfs", "ensure_image"]

FWD_ADDR = "10.0.2.100"  # inside slirp's own 10.0.2.0/24; never a real network
GUESTD_PORT = 7000
# The board's TCP port for inbound UDP port Q is Q + this: not Q itself, because aiocoap
# server contexts (the agent's, a gateway's) also listen for CoAP over TCP on 5683.
INBOUND_TCP_OFFSET = 20000
FWD_SCRIPT = Path(__file__).resolve().parent / "fwd.py"


class BootError(RuntimeError):
    pass


@dataclass
class GuestResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> GuestResult:
        if self.rc != 0:
            raise AssertionError(
                f"guest command failed ({self.rc}): {shlex.join(self.argv)}\n"
                f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
            )
        return self


class Board:
    def __init__(
        self,
        image: BoardImage,
        workdir: Path,
        qemu_bin: str,
        *,
        shares: Mapping[str, Path] | None = None,
        tcp_to_host: Mapping[int, int] | None = None,
        udp_to_host: Mapping[int, int] | None = None,
        udp_from_host: Mapping[int, int] | None = None,
        cpu: str = "max,pauth-impdef=on",
        smp: int = 2,
        memory_mb: int = 2048,
        name: str = "board",
    ) -> None:
        self.image = image
        self.workdir = workdir
        self.qemu_bin = qemu_bin
        self.share = workdir / "share"
        self.shares = dict(shares or {})
        self.tcp_to_host = dict(tcp_to_host or {})
        self.udp_to_host = dict(udp_to_host or {})
        self.udp_from_host = dict(udp_from_host or {})
        self.cpu, self.smp, self.memory_mb, self.name = cpu, smp, memory_mb, name
        self.guestd_port = 0
        self.proc: ServerProcess | None = None
        self._inbound_tcp: dict[int, int] = {}
        self._host_shims: list[ServerProcess] = []
        self.boot_seconds = 0.0  # host wall time from starting QEMU to guestd answering
        self.guest_uptime_at_ready = 0.0

    # -- boot ------------------------------------------------------------------------------
    def _boot_script(self) -> str:
        lines = ["#!/bin/sh", "set -e"]
        for tag in self.shares:
            lines.append(f"mkdir -p /mnt/{tag}")
            lines.append(f"mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro {tag} /mnt/{tag}")
        # One shim per forwarded UDP port; the guestfwd for port P sits on FWD_ADDR:P.
        for guest_port in self.udp_to_host:
            lines.append(
                f"python3 /mnt/host/udp_shim.py out {guest_port} {FWD_ADDR} {guest_port}"
                f" > /mnt/host/logs/udp_shim-{guest_port}.log 2>&1 &"
            )
        for guest_port in self.udp_from_host.values():
            lines.append(
                f"python3 /mnt/host/udp_shim.py in {guest_port + INBOUND_TCP_OFFSET} {guest_port}"
                f" > /mnt/host/logs/udp_shim-in-{guest_port}.log 2>&1 &"
            )
        lines.append("exec python3 /mnt/host/guestd.py")
        return "\n".join(lines) + "\n"

    def qemu_argv(self) -> list[str]:
        netdev = ["user", "id=n0", "restrict=on", "net=10.0.2.0/24", "host=10.0.2.2"]
        self.guestd_port = free_tcp_port()
        netdev.append(f"hostfwd=tcp:{LOOPBACK}:{self.guestd_port}-:{GUESTD_PORT}")
        self._inbound_tcp = {}
        for host_port, guest_port in self.udp_from_host.items():
            self._inbound_tcp[host_port] = free_tcp_port()
            netdev.append(
                f"hostfwd=tcp:{LOOPBACK}:{self._inbound_tcp[host_port]}-:{guest_port + INBOUND_TCP_OFFSET}"
            )
        for kind, table in (("tcp", self.tcp_to_host), ("udp", self.udp_to_host)):
            for guest_port, host_port in table.items():
                cmd = f"{sys.executable} {FWD_SCRIPT} {kind} {LOOPBACK} {host_port}"
                netdev.append(f"guestfwd=tcp:{FWD_ADDR}:{guest_port}-cmd:{cmd}")
        argv = [
            self.qemu_bin,
            "-M", "virt",
            "-cpu", self.cpu,
            "-smp", str(self.smp),
            "-m", str(self.memory_mb),
            "-nographic", "-no-reboot",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", "console=ttyAMA0 panic=-1 quiet loglevel=4",
            "-netdev", ",".join(netdev),
            "-device", "virtio-net-device,netdev=n0",
            "-device", "virtio-rng-device",
            "-fsdev", f"local,id=fs0,path={self.share},security_model=none",
            "-device", "virtio-9p-device,fsdev=fs0,mount_tag=host0",
        ]  # fmt: skip
        for i, (tag, path) in enumerate(self.shares.items(), start=1):
            argv += [
                "-fsdev", f"local,id=fs{i},path={path},security_model=none,readonly=on",
                "-device", f"virtio-9p-device,fsdev=fs{i},mount_tag={tag}",
            ]  # fmt: skip
        return argv

    def start(self, timeout: float = 240.0) -> Board:
        self.share.mkdir(parents=True, exist_ok=True)
        (self.share / "logs").mkdir(exist_ok=True)
        for f in ("guestd.py", "udp_shim.py"):
            shutil.copy2(GUEST_DIR / f, self.share / f)
        boot = self.share / "boot.sh"
        boot.write_text(self._boot_script())
        boot.chmod(0o755)
        t0 = time.monotonic()
        self.proc = ServerProcess(self.qemu_argv(), log_dir=self.workdir, name=f"qemu-{self.name}")
        self.proc.start()
        deadline = t0 + timeout
        while True:
            if not self.proc.is_running():
                raise BootError(f"QEMU exited ({self.proc.returncode}); console:\n{self.console_tail()}")
            try:
                answer = self._request({"ping": True}, timeout=5)
                self.guest_uptime_at_ready = float(answer["uptime"])
                break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BootError(f"board not up after {timeout:.0f}s; console:\n{self.console_tail()}")
            time.sleep(0.5)
        self.boot_seconds = time.monotonic() - t0
        for host_port, tcp_port in self._inbound_tcp.items():
            shim = ServerProcess(
                [
                    sys.executable,
                    str(GUEST_DIR / "udp_shim.py"),
                    "out",
                    str(host_port),
                    LOOPBACK,
                    str(tcp_port),
                ],
                log_dir=self.workdir,
                name=f"udp_shim-host-{host_port}",
            )
            self._host_shims.append(shim.start())
        return self

    # -- commands --------------------------------------------------------------------------
    def _request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        with socket.create_connection((LOOPBACK, self.guestd_port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise ConnectionResetError("guestd closed the connection without an answer")
                buf += chunk
        answer: dict[str, Any] = json.loads(buf)
        if "error" in answer:
            raise RuntimeError(f"guestd: {answer['error']}")
        return answer

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float = 600.0,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> GuestResult:
        """Run ``cmd`` on the board (a string goes through /bin/sh -c) and wait for it."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        answer = self._request({"argv": argv, "env": dict(env or {}), "timeout": timeout}, timeout + 30)
        result = GuestResult(
            argv=argv,
            rc=int(answer["rc"]),
            stdout=str(answer["stdout"]),
            stderr=str(answer["stderr"]),
            seconds=float(answer["seconds"]),
        )
        return result.check() if check else result

    def spawn(self, argv: Sequence[str], name: str, *, env: Mapping[str, str] | None = None) -> int:
        """Start a long-running process on the board; its output goes to logs/<name>.log."""
        answer = self._request(
            {"spawn": list(argv), "log": f"/mnt/host/logs/{name}.log", "env": dict(env or {})}, 60
        )
        return int(answer["pid"])

    def running(self, pid: int) -> bool:
        return self._request({"poll": pid}, 30).get("rc") is None

    def terminate(self, pid: int, wait: float = 20.0) -> int | None:
        answer = self._request({"signal": pid, "sig": 15, "wait": wait}, wait + 30)
        rc = answer.get("rc")
        return None if rc is None else int(rc)

    def log(self, name: str) -> str:
        path = self.share / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def console(self) -> str:
        return self.proc.log_text() if self.proc else ""

    def console_tail(self, lines: int = 60) -> str:
        return self.proc.log_tail(lines) if self.proc else ""

    def stop(self) -> None:
        for shim in self._host_shims:
            shim.stop(timeout=5)
        if self.proc is not None:
            self.proc.stop(timeout=5)
