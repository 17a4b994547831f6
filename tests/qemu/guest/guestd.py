"""Command server inside the emulated board (runs under the board's arm64 CPython, stdlib only).

The harness reaches it through a QEMU ``hostfwd`` (host 127.0.0.1:P -> guest :7000). One JSON
request per connection, one JSON answer:

    {"argv": [...], "env": {...}, "cwd": "/", "timeout": 60}  ->  {"rc", "stdout", "stderr", "seconds"}
    {"spawn": [...], "log": "/mnt/host/logs/x.log", "env": {...}}  ->  {"pid"}
    {"signal": pid, "sig": 15}  ->  {"ok": true}
    {"ping": true}  ->  {"uptime": seconds since the guest kernel started}

It is test plumbing, the board's "ssh"; fleetlet itself never uses it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

PORT = 7000
children: dict[int, subprocess.Popen[bytes]] = {}


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def handle(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("ping"):
        return {"uptime": uptime()}
    env = dict(os.environ)
    env.update(req.get("env") or {})
    if "spawn" in req:
        log = open(req["log"], "ab")
        proc = subprocess.Popen(
            req["spawn"],
            env=env,
            cwd=req.get("cwd") or "/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        children[proc.pid] = proc
        return {"pid": proc.pid}
    if "signal" in req:
        pid = int(req["signal"])
        try:
            os.killpg(pid, int(req.get("sig", signal.SIGTERM)))
        except ProcessLookupError:
            pass
        child = children.get(pid)
        code = None
        if child is not None:
            try:
                code = child.wait(float(req.get("wait", 10)))
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                code = child.wait()
        return {"ok": True, "rc": code}
    if "poll" in req:
        polled = children.get(int(req["poll"]))
        return {"rc": None if polled is None else polled.poll(), "known": polled is not None}
    t0 = time.monotonic()
    rc: int
    out: bytes
    err: bytes
    try:
        done = subprocess.run(
            req["argv"],
            env=env,
            cwd=req.get("cwd") or "/",
            capture_output=True,
            timeout=req.get("timeout", 600),
            stdin=subprocess.DEVNULL,
        )
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -999, bytes(e.stdout or b""), bytes(e.stderr or b"") + b"\n[guestd: timed out]"
    except OSError as e:
        rc, out, err = -998, b"", str(e).encode()
    return {
        "rc": rc,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
        "seconds": time.monotonic() - t0,
    }


def serve(conn: socket.socket) -> None:
    with conn:
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        try:
            answer = handle(json.loads(buf))
        except Exception as e:  # answer, never die: the harness shows the error
            answer = {"error": f"{type(e).__name__}: {e}"}
        conn.sendall(json.dumps(answer).encode() + b"\n")


def main() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", PORT))
    srv.listen(16)
    print(f"guestd: listening on :{PORT} at {uptime():.2f}s", flush=True)
    sys.stdout.flush()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
