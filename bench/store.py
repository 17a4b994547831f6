"""bench/store: durable creates/s through the HTTP API against etcd 3.4 in the same run, and watch latency.

    python bench/store.py            # full run (about two minutes)
    python bench/store.py --quick    # a smaller run for a smoke check

Figures and their anchors print side by side; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Proc, fleetlet_bin, free_port, percentile, print_json, print_table

VALUE = "v" * 200  # the payload in both systems, so both write about the same bytes


def ensure_etcd() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing Debian's etcd-server for the comparison ...", flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "etcd-server"],
            check=False,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("etcd")
        if found:
            return found
    sys.exit("bench: etcd is not installed and could not be installed (Debian package etcd-server)")


async def drive(
    session: aiohttp.ClientSession,
    concurrency: int,
    total: int,
    make_request: Any,
) -> tuple[float, list[float]]:
    """Run ``total`` requests with ``concurrency`` in flight; returns (ops/s, latencies in ms)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            async with make_request(session, i) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise SystemExit(f"bench: request failed with {resp.status}: {await resp.text()}")
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0), latencies


async def fleetlet_creates(
    base: str, token: str, concurrency: int, total: int, tag: str
) -> tuple[float, list[float]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = f"{base}/api/v1/namespaces/default/configmaps"

    def req(s: aiohttp.ClientSession, i: int) -> Any:
        body = {
            "apiVersion": "fleetlet.io/v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{tag}-{i}"},
            "data": {"v": VALUE},
        }
        return s.post(url, data=json.dumps(body), headers=headers)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        return await drive(s, concurrency, total, req)


async def etcd_puts(base: str, concurrency: int, total: int, tag: str) -> tuple[float, list[float]]:
    url = f"{base}/v3/kv/put"

    def req(s: aiohttp.ClientSession, i: int) -> Any:
        key = base64.b64encode(f"/registry/configmaps/default/{tag}-{i}".encode()).decode()
        val = base64.b64encode(json.dumps({"data": {"v": VALUE}}).encode()).decode()
        return s.post(url, json={"key": key, "value": val})

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        return await drive(s, concurrency, total, req)


_MARK = b'"bench/sent":"'


class _WatchStream(asyncio.Protocol):
    """One raw HTTP watch stream. Receipt is stamped in data_received, before any parsing, so
    the figure is the server's delivery (commit, fan-out, socket) and not a client's coroutine
    scheduling: with 1,000 aiohttp readers in one process, the client alone added tens of ms."""

    def __init__(self, request: bytes, samples: list[float], want: int, done: asyncio.Future[None]) -> None:
        self.request = request
        self.samples = samples
        self.want = want
        self.done = done
        self.seen = 0
        self.buf = b""
        self.headers_ok = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self.request)  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.headers_ok.done():
            head, sep, rest = (self.buf + data).partition(b"\r\n\r\n")
            if not sep:
                self.buf += data
                return
            if not head.startswith(b"HTTP/1.1 200"):
                self.headers_ok.set_exception(SystemExit(f"bench: watch failed: {head[:200]!r}"))
                return
            self.headers_ok.set_result(None)
            self.buf, data = b"", rest
        buf = self.buf + data
        pos = 0
        while True:
            at = buf.find(_MARK, pos)
            end = buf.find(b'"', at + len(_MARK)) if at >= 0 else -1
            if at < 0 or end < 0:
                break
            self.samples.append((now - float(buf[at + len(_MARK) : end])) * 1000)
            self.seen += 1
            pos = end
        self.buf = buf[max(pos, len(buf) - 64) :]
        if self.seen >= self.want and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(SystemExit(f"bench: a watch stream ended early ({exc})"))


async def watch_latency(base: str, token: str, watchers: int, events: int, rate: float) -> list[float]:
    """Open ``watchers`` HTTP watch streams, write paced objects, and time send-to-receipt."""
    headers = {"Authorization": f"Bearer {token}"}
    body_headers = {**headers, "Content-Type": "application/json"}
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    host, port = base.removeprefix("http://").rsplit(":", 1)
    async with aiohttp.ClientSession() as s:
        ns = {"apiVersion": "fleetlet.io/v1", "kind": "Namespace", "metadata": {"name": "bench-watch"}}
        await (await s.post(f"{base}/api/v1/namespaces", data=json.dumps(ns), headers=body_headers)).read()
        rv_resp = await s.get(f"{base}/api/v1/namespaces/default/configmaps?limit=1", headers=headers)
        rv = (await rv_resp.json())["metadata"]["resourceVersion"]
        request = (
            f"GET /api/v1/namespaces/bench-watch/configmaps?watch=1&resourceVersion={rv} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        streams: list[tuple[asyncio.Transport, _WatchStream]] = []
        dones: list[asyncio.Future[None]] = []
        for _ in range(watchers):
            done: asyncio.Future[None] = loop.create_future()
            transport, proto = await loop.create_connection(
                lambda done=done: _WatchStream(request, samples, events, done), host, int(port)
            )
            streams.append((transport, proto))
            dones.append(done)
        await asyncio.wait_for(asyncio.gather(*(p.headers_ok for _, p in streams)), 120)
        await asyncio.sleep(1.0)  # let every stream settle
        for i in range(events):
            body = {
                "apiVersion": "fleetlet.io/v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"w-{i}", "annotations": {"bench/sent": repr(time.perf_counter())}},
                "data": {"v": VALUE},
            }
            async with s.post(
                f"{base}/api/v1/namespaces/bench-watch/configmaps",
                data=json.dumps(body),
                headers=body_headers,
            ) as r:
                await r.read()
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(asyncio.gather(*dones), 120)
        for transport, _ in streams:
            transport.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller run for a smoke check")
    ap.add_argument("--watchers", type=int, default=1000)
    args = ap.parse_args()
    n1, n64, events = (200, 2000, 20) if args.quick else (1000, 10000, 50)
    etcd_bin = ensure_etcd()

    data = Path(tempfile.mkdtemp(prefix="bench-store-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Proc(
        [fleetlet_bin(), "server", "--data-dir", str(data / "fleetlet"), "--listen", f"127.0.0.1:{port}"],
        "fleetlet-server",
        env={"FLEETLET_CONFIG": str(data / "config.yaml")},
    )
    cport, pport = free_port(), free_port()
    etcd = Proc(
        [
            etcd_bin,
            "--name",
            "bench",
            "--data-dir",
            str(data / "etcd"),
            "--listen-client-urls",
            f"http://127.0.0.1:{cport}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{cport}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{pport}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{pport}",
            "--initial-cluster",
            f"bench=http://127.0.0.1:{pport}",
        ],
        "etcd",
        env={"ETCD_UNSUPPORTED_ARCH": "arm64"},
    )
    try:
        server.wait_http(f"{base}/healthz")
        etcd.wait_http(f"http://127.0.0.1:{cport}/health")
        token = (data / "fleetlet" / "admin.token").read_text().strip()
        print(f"bench/store: fleetlet at {base} (SQLite WAL, synchronous=FULL), etcd {etcd_bin} on :{cport}")

        async def run() -> dict[str, Any]:
            await fleetlet_creates(base, token, 8, 200, "warm")
            await etcd_puts(f"http://127.0.0.1:{cport}", 8, 200, "warm")
            f1, l1 = await fleetlet_creates(base, token, 1, n1, "c1")
            e1, el1 = await etcd_puts(f"http://127.0.0.1:{cport}", 1, n1, "c1")
            # Alternating rounds: this machine's speed drifts (shared host), and one long phase
            # per system let a slow minute land on one side only. Rates are total ops / total time.
            rounds = 4
            f_time = e_time = 0.0
            l64: list[float] = []
            el64: list[float] = []
            for r in range(rounds):
                rate, lat = await fleetlet_creates(base, token, 64, n64 // rounds, f"c64r{r}")
                f_time += (n64 // rounds) / rate
                l64 += lat
                rate, lat = await etcd_puts(f"http://127.0.0.1:{cport}", 64, n64 // rounds, f"c64r{r}")
                e_time += (n64 // rounds) / rate
                el64 += lat
            f64 = rounds * (n64 // rounds) / f_time
            e64 = rounds * (n64 // rounds) / e_time
            return {
                "f1": f1,
                "l1": l1,
                "e1": e1,
                "el1": el1,
                "f64": f64,
                "l64": l64,
                "e64": e64,
                "el64": el64,
            }

        r = asyncio.run(run())  # both systems' creates: the same client, the stdlib loop
        # The watch receipts on uvloop: 1,000 sockets' callbacks run one after another in this
        # one process, so the client's own per-callback cost lands in the later receipts.
        r["w"] = uvloop.run(watch_latency(base, token, args.watchers, events, rate=10))
    finally:
        server.stop()
        etcd.stop()

    result = {
        "creates_per_s_c1": round(r["f1"], 1),
        "creates_per_s_c64": round(r["f64"], 1),
        "create_p50_ms_c1": round(percentile(r["l1"], 50), 2),
        "create_p99_ms_c1": round(percentile(r["l1"], 99), 2),
        "create_p50_ms_c64": round(percentile(r["l64"], 50), 2),
        "create_p99_ms_c64": round(percentile(r["l64"], 99), 2),
        "etcd_puts_per_s_c1": round(r["e1"], 1),
        "etcd_puts_per_s_c64": round(r["e64"], 1),
        "etcd_put_p99_ms_c64": round(percentile(r["el64"], 99), 2),
        "ratio_vs_etcd_c64": round(r["f64"] / r["e64"], 2),
        "watch_p50_ms": round(percentile(r["w"], 50), 2),
        "watch_p99_ms": round(percentile(r["w"], 99), 2),
        "watchers": args.watchers,
        "watch_samples": len(r["w"]),
    }
    print_table(
        "durable creates through the HTTP API (fleetlet) vs etcd 3.4 puts (JSON gateway)",
        [
            (
                "creates/s c=1",
                f"{result['creates_per_s_c1']}",
                f"etcd puts/s c=1: {result['etcd_puts_per_s_c1']}",
            ),
            ("create p50/p99 ms c=1", f"{result['create_p50_ms_c1']}/{result['create_p99_ms_c1']}", ""),
            (
                "creates/s c=64",
                f"{result['creates_per_s_c64']}",
                f"etcd puts/s c=64: {result['etcd_puts_per_s_c64']}",
            ),
            (
                "create p50/p99 ms c=64",
                f"{result['create_p50_ms_c64']}/{result['create_p99_ms_c64']}",
                f"etcd p99 ms c=64: {result['etcd_put_p99_ms_c64']}",
            ),
            ("ratio vs etcd c=64", f"{result['ratio_vs_etcd_c64']}x", "target >= 1.0x"),
        ],
    )
    print_table(
        f"watch delivery, send-to-receipt (an upper bound on commit-to-receipt), {args.watchers} watchers",
        [
            ("watch p50 ms", f"{result['watch_p50_ms']}", ""),
            ("watch p99 ms", f"{result['watch_p99_ms']}", "target p99 < 50 ms"),
        ],
    )
    print_json(result)


if __name__ == "__main__":
    main()
