"""Shared bench helpers: processes on loopback, free ports, percentiles, and the result table."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def fleetlet_bin() -> str:
    candidate = Path(sys.executable).parent / "fleetlet"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("fleetlet")
    if not found:
        sys.exit("bench: the fleetlet command is not installed; run `bash scripts/install.sh` first")
    return found


class Proc:
    """A background process whose output goes to a log file; killed on exit."""

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.log_path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-")) / f"{name}.log"
        self.name = name
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait_http(self, url: str, timeout: float = 60.0, token: str | None = None) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {self.name} exited early:\n{self.tail()}")
            req = urllib.request.Request(url)
            if token:
                req.add_header("Authorization", f"Bearer {token}")
            try:
                with opener.open(req, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"bench: {self.name} did not answer at {url}:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        """SIGTERM, a grace period, then SIGKILL to the whole group: a bench leaves nothing behind."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # children a stopped parent left behind
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Each row: (figure, measured value, anchor) side by side."""
    print(f"\n== {title} ==")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, anchor in rows:
        print(f"  {name:<{width}}  {value:>{vwidth}}   | {anchor}")


def print_json(result: dict[str, Any]) -> None:
    print(json.dumps(result, sort_keys=True))
