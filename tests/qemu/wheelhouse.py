"""A wheelhouse for the arm64 board, prepared on the x86_64 host (as a user would for a Pi).

    wh = build_wheelhouse(repo_root, dest)   # dest/ holds every wheel `pip install fleetlet` needs

* fleetlet's dependencies (read from pyproject.toml): ``pip download --only-binary=:all:
  --platform manylinux*_aarch64 --python-version 3.11 --implementation cp --abi cp311``.
  Pure-Python dependencies come as ``py3-none-any`` wheels. Cached under
  ``<cache>/wheelhouse/<sha256 of the requirement list and platform tags>/``.
* fleetlet itself: ``pip wheel --no-deps`` of a copy of the checkout (pure Python), built for
  every session, so the board always runs the code under test.

Debian bookworm arm64 ships CPython 3.11 (glibc 2.36), hence the tags. Every current
dependency has an aarch64 wheel on PyPI; one that has none would fail ``pip download`` with
its name, and the fix is to add its Debian package (``python3-xyz``) to image.PACKAGES.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from .image import BuildError, cache_root

__all__ = ["PLATFORMS", "build_wheelhouse", "fleetlet_requirements"]

PYTHON_VERSION = "3.11"
PLATFORMS = (
    "manylinux2014_aarch64",
    *(f"manylinux_2_{v}_aarch64" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)),
)
SOURCE_ITEMS = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "server",
    "gateway",
    "schemas",
    "device-firmware",
    "hardware",
)


def fleetlet_requirements(repo: Path) -> list[str]:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def _pip(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, cwd=cwd, check=False, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BuildError(f"pip {' '.join(args[:2])} failed ({proc.returncode}):\n{tail}")


def dependency_wheels(repo: Path, cache: Path | None = None) -> Path:
    reqs = fleetlet_requirements(repo)
    key = hashlib.sha256(json.dumps([reqs, PLATFORMS, PYTHON_VERSION]).encode()).hexdigest()
    base = (cache or cache_root()) / "wheelhouse"
    base.mkdir(parents=True, exist_ok=True)
    dest = base / key
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / ".complete").exists():
            shutil.rmtree(dest, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix="wh-", dir=base))
            platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
            _pip(
                "download", "--only-binary=:all:", *platform_args,
                "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp311",
                "-d", str(staging), *reqs,
            )  # fmt: skip
            (staging / ".complete").write_text(json.dumps(reqs) + "\n")
            staging.rename(dest)
    return dest


def build_wheelhouse(repo: Path, dest: Path, cache: Path | None = None) -> Path:
    """Fill ``dest`` with the dependency wheels (cached) and a fresh fleetlet wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in dependency_wheels(repo, cache).glob("*.whl"):
        shutil.copy2(wheel, dest / wheel.name)
    with tempfile.TemporaryDirectory(prefix="fleetlet-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
        for item in SOURCE_ITEMS:
            path = repo / item
            if path.is_dir():
                shutil.copytree(path, src / item, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, src / item)
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), str(src))
    if not list(dest.glob("fleetlet-*.whl")):
        raise BuildError(f"pip wheel produced no fleetlet wheel in {dest}")
    return dest
