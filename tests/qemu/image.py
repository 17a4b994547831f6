"""The emulated board's image: Debian bookworm arm64 (debootstrap) + Debian's arm64 kernel.

    image = ensure_image()            # cached; built once per set of inputs
    image.kernel, image.initrd        # vmlinuz (gzip'd arm64 Image) and the root fs as a cpio

How it is built (``build_image``):

1. ``debootstrap --arch=arm64 --foreign --variant=minbase --include=<PACKAGES>`` from the
   Debian mirror this host's apt uses (``/etc/apt/sources.list(.d)``, or ``$FLEETLET_DEBIAN_MIRROR``).
2. The second stage runs in a chroot under ``qemu-aarch64-static`` through binfmt_misc
   (Debian ``qemu-user-static`` + ``binfmt-support``; registered here if it is not yet).
3. The kernel: ``apt-get download linux-image-<abi>-arm64`` with a private apt state (arm64
   only, nothing on the host's apt configuration changes), unpacked with ``dpkg-deb -x``.
   Only the few modules the board needs (virtio-mmio, virtio-net, virtio-rng, 9p) are copied
   into the root fs, and ``depmod`` runs in the chroot.
4. ``guest/init.sh`` becomes ``/init``; docs, man pages, locales and apt caches are dropped.
5. The root fs is packed as an uncompressed newc cpio and booted as the initramfs: no block
   device, no root= mount, no module for ext4/virtio-blk in an early initramfs. Unpacking
   ~180 MB under TCG takes ~6 s, less than decompressing it would.

The result lives in ``<cache>/qemu/<sha256 of the inputs>/`` (kernel, initrd.cpio,
manifest.json); the inputs are the release, the package list, the module list and the script
version (plus the init script's text). ``<cache>`` is ``$FLEETLET_CACHE_DIR`` or
``~/.cache/fleetlet``. A build holds a lock file, so concurrent sessions build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GUEST_DIR",
    "MODULES",
    "PACKAGES",
    "RELEASE",
    "BoardImage",
    "BuildError",
    "build_image",
    "build_rootfs",
    "cache_root",
    "debian_mirror",
    "ensure_binfmt",
    "ensure_image",
    "image_key",
]

SCRIPT_VERSION = "3"
RELEASE = "bookworm"
ARCH = "arm64"
PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "ca-certificates",
    "iproute2",
    "kmod",
    "procps",
)
# Paths under lib/modules/<ver>/kernel/: just what the board's init loads (and their deps).
MODULES = (
    "drivers/virtio/virtio_mmio.ko",
    "drivers/char/hw_random/virtio-rng.ko",
    "drivers/net/virtio_net.ko",
    "drivers/net/net_failover.ko",
    "net/core/failover.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
)
GUEST_DIR = Path(__file__).resolve().parent / "guest"
INIT_SCRIPT = GUEST_DIR / "init.sh"
TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "var/cache/apt",
    "var/lib/apt/lists",
)


class BuildError(RuntimeError):
    """The image could not be built (the message names the step and carries its output)."""


@dataclass(frozen=True)
class BoardImage:
    dir: Path
    kernel: Path
    initrd: Path
    manifest: dict[str, object]
    built: bool  # True if this call built it, False if it came from the cache
    seconds: float  # build time (if built) or lookup time


# --- inputs and cache ----------------------------------------------------------------------
def cache_root() -> Path:
    base = os.environ.get("FLEETLET_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "fleetlet"


def image_key() -> str:
    inputs = {
        "script": SCRIPT_VERSION,
        "release": RELEASE,
        "arch": ARCH,
        "packages": sorted(PACKAGES),
        "modules": sorted(MODULES),
        "init": hashlib.sha256(INIT_SCRIPT.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def debian_mirror() -> str:
    """The Debian archive URI this host's apt uses for the main suite (not -security)."""
    override = os.environ.get("FLEETLET_DEBIAN_MIRROR")
    if override:
        return override
    uris: list[str] = []
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":  # deb822
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (
                        line.partition(":") for line in stanza.splitlines() if not line.startswith("#")
                    )
                    if v
                )
                suites = fields.get("suites", "").split()
                if RELEASE in suites and "deb" in fields.get("types", "").split():
                    uris += fields.get("uris", "").split()
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == RELEASE:
                    uris.append(parts[1])
    for uri in uris:
        if "/debian" in uri and "security" not in uri:
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


# --- host requirements --------------------------------------------------------------------
def ensure_binfmt() -> None:
    """Make sure aarch64 ELF binaries run through qemu-aarch64-static (for the chroot steps)."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
    entry = binfmt / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists() or "enabled" not in entry.read_text():
        raise BuildError(
            "binfmt_misc has no enabled qemu-aarch64 entry (install qemu-user-static and binfmt-support; "
            "the second stage of debootstrap runs arm64 binaries in a chroot)"
        )


def _run(argv: list[str], step: str, *, cwd: Path | None = None, timeout: float = 1800) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BuildError(f"{step} failed ({proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc.stdout


# --- build steps ----------------------------------------------------------------------------
def build_rootfs(root: Path, mirror: str | None = None, log: list[str] | None = None) -> None:
    """debootstrap an arm64 bookworm minbase into ``root`` (both stages)."""
    mirror = mirror or debian_mirror()
    notes = log if log is not None else []
    ensure_binfmt()
    t0 = time.monotonic()
    _run(
        [
            "debootstrap",
            f"--arch={ARCH}",
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            RELEASE,
            str(root),
            mirror,
        ],
        "debootstrap (first stage)",
    )
    notes.append(f"debootstrap first stage: {time.monotonic() - t0:.0f}s")
    # With binfmt's F flag the kernel already holds the interpreter; copying it in keeps the
    # chroot working with a registration that lacks F as well.
    qemu_user = shutil.which("qemu-aarch64-static") or "/usr/bin/qemu-aarch64-static"
    shutil.copy2(qemu_user, root / "usr/bin/qemu-aarch64-static")
    t0 = time.monotonic()
    _run(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], "debootstrap (second stage)")
    notes.append(f"debootstrap second stage (qemu-user): {time.monotonic() - t0:.0f}s")


def _apt_opts(state: Path) -> list[str]:
    return [
        "-o", f"APT::Architecture={ARCH}",
        "-o", f"APT::Architectures::={ARCH}",
        "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Dir::State::status=/dev/null",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def fetch_kernel(work: Path, mirror: str) -> tuple[Path, str]:
    """``apt-get download`` Debian's current arm64 kernel into ``work``; returns (unpacked dir, abi)."""
    state = work / "apt"
    for d in (state / "lists" / "partial", state / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (state / "sources.list").write_text(f"deb [arch={ARCH} signed-by={keyring}] {mirror} {RELEASE} main\n")
    opts = _apt_opts(state)
    _run(["apt-get", *opts, "update"], "apt-get update (arm64 lists)")
    depends = _run(["apt-cache", *opts, "depends", "linux-image-arm64"], "apt-cache depends")
    found = re.search(r"Depends: (linux-image-(\S+)-arm64)\b", depends)
    if not found:
        raise BuildError(f"no kernel package behind linux-image-arm64:\n{depends}")
    package, abi = found.group(1), found.group(2) + "-arm64"
    _run(["apt-get", *opts, "download", package], "apt-get download kernel", cwd=work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if not debs:
        raise BuildError(f"apt-get download left no {package} .deb in {work}")
    unpacked = work / "kernel"
    _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], "dpkg-deb -x kernel")
    return unpacked, abi


def install_modules(root: Path, kernel_dir: Path, abi: str) -> None:
    src = kernel_dir / "lib" / "modules" / abi
    dst = root / "lib" / "modules" / abi
    dst.mkdir(parents=True, exist_ok=True)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src / meta).exists():
            shutil.copy2(src / meta, dst / meta)
    for mod in MODULES:
        target = dst / "kernel" / mod
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "kernel" / mod, target)
    _run(["chroot", str(root), "depmod", abi], "depmod in the chroot")


def finish_rootfs(root: Path) -> None:
    shutil.copy2(INIT_SCRIPT, root / "init")
    os.chmod(root / "init", 0o755)
    (root / "etc" / "hostname").write_text("fleetlet-board\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost fleetlet-board\n")
    for rel in TRIM:
        path = root / rel
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (root / "usr/bin/qemu-aarch64-static").unlink(missing_ok=True)


def pack_cpio(root: Path, out: Path) -> None:
    with open(out, "wb") as f:
        find = subprocess.Popen(["find", ".", "-print0"], cwd=root, stdout=subprocess.PIPE)
        cpio = subprocess.run(
            ["cpio", "--null", "-o", "-H", "newc", "--quiet"],
            cwd=root,
            stdin=find.stdout,
            stdout=f,
            check=False,
        )
        assert find.stdout is not None
        find.stdout.close()
        if find.wait() != 0 or cpio.returncode != 0:
            raise BuildError(f"packing the initramfs failed (find {find.returncode}, cpio {cpio.returncode})")


def build_image(dest: Path, mirror: str | None = None) -> dict[str, object]:
    """Build the whole image into ``dest`` (which must not exist); returns the manifest."""
    mirror = mirror or debian_mirror()
    notes: list[str] = []
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleetlet-board-build-", dir=dest.parent))
    try:
        root = work / "root"
        build_rootfs(root, mirror, notes)
        t0 = time.monotonic()
        kernel_dir, abi = fetch_kernel(work, mirror)
        install_modules(root, kernel_dir, abi)
        notes.append(f"kernel download + modules: {time.monotonic() - t0:.0f}s")
        finish_rootfs(root)
        staging = work / "out"
        staging.mkdir()
        shutil.copy2(kernel_dir / "boot" / f"vmlinuz-{abi}", staging / "vmlinuz")
        shutil.copy2(kernel_dir / "boot" / f"config-{abi}", staging / "config")
        t0 = time.monotonic()
        pack_cpio(root, staging / "initrd.cpio")
        notes.append(f"cpio: {time.monotonic() - t0:.0f}s")
        python = sorted(
            p.name for p in (root / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name)
        )
        manifest: dict[str, object] = {
            "key": image_key(),
            "release": RELEASE,
            "arch": ARCH,
            "mirror": mirror,
            "packages": list(PACKAGES),
            "kernel": abi,
            "python": python,
            "script_version": SCRIPT_VERSION,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - t_start, 1),
            "build_steps": notes,
            "initrd_bytes": (staging / "initrd.cpio").stat().st_size,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.rename(dest)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def layer_key(packages: tuple[str, ...]) -> str:
    inputs = {"base": image_key(), "layer": sorted(packages), "script": SCRIPT_VERSION}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def build_layer(parent: Path, dest: Path, packages: tuple[str, ...]) -> dict[str, object]:
    """The parent image plus Debian packages, installed with apt-get in a chroot (qemu-user)."""
    ensure_binfmt()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleetlet-board-layer-", dir=dest.parent))
    try:
        root = work / "root"
        root.mkdir()
        with open(parent / "initrd.cpio", "rb") as f:
            proc = subprocess.run(
                ["cpio", "-i", "-d", "-m", "--quiet", "--no-absolute-filenames"],
                cwd=root, stdin=f, capture_output=True, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            raise BuildError(f"unpacking {parent / 'initrd.cpio'} failed: {proc.stderr.decode()}")
        qemu_user = shutil.which("qemu-aarch64-static") or "/usr/bin/qemu-aarch64-static"
        shutil.copy2(qemu_user, root / "usr/bin/qemu-aarch64-static")
        policy = root / "usr/sbin/policy-rc.d"  # no service starts inside the chroot
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = ["env", "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        _run(["chroot", str(root), *env, "apt-get", "-q", "update"], "apt-get update in the chroot")
        _run(
            [
                "chroot",
                str(root),
                *env,
                "apt-get",
                "-q",
                "install",
                "-y",
                "--no-install-recommends",
                *packages,
            ],
            "apt-get install in the chroot",
        )
        _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean in the chroot")
        policy.unlink()
        finish_rootfs(root)
        staging = work / "out"
        staging.mkdir()
        for name in ("vmlinuz", "config"):
            shutil.copy2(parent / name, staging / name)
        pack_cpio(root, staging / "initrd.cpio")
        manifest = dict(json.loads((parent / "manifest.json").read_text()))
        manifest.update(
            key=dest.name,
            parent=parent.name,
            layer_packages=list(packages),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            layer_build_seconds=round(time.monotonic() - t_start, 1),
            initrd_bytes=(staging / "initrd.cpio").stat().st_size,
        )
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.rename(dest)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cached(base: Path, key: str, build: Callable[[Path], object]) -> bool:
    """Build ``base/key`` under a lock unless it is complete; True if this call built it."""
    dest = base / key
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "manifest.json").exists():
            return False
        shutil.rmtree(dest, ignore_errors=True)
        build(dest)
        return True


def ensure_image(cache: Path | None = None, layer: tuple[str, ...] = ()) -> BoardImage:
    """The cached image for the current inputs, built first if missing.

    ``layer``: extra Debian packages (e.g. docker.io) on top of the base image, cached
    separately under a key of the base key and the package list.
    """
    t0 = time.monotonic()
    base = (cache or cache_root()) / "qemu"
    base.mkdir(parents=True, exist_ok=True)
    key = image_key()
    built = _cached(base, key, build_image)
    if layer:
        parent = base / key
        key = layer_key(layer)
        built = _cached(base, key, lambda d: build_layer(parent, d, layer)) or built
    dest = base / key
    manifest = json.loads((dest / "manifest.json").read_text())
    return BoardImage(
        dir=dest,
        kernel=dest / "vmlinuz",
        initrd=dest / "initrd.cpio",
        manifest=manifest,
        built=built,
        seconds=time.monotonic() - t0,
    )
