"""Helpers for the firmware tests: the firmware as a board would get it, a device process
running it under the real MicroPython interpreter, and a counting, lossy UDP relay.

    fw = build_firmware(mpy_cross, tmp)            # main.py + every other module as .mpy
    dev = Device(micropython, fw, config, tmp)      # device.json written, data dir in tmp
    dev.start(); dev.wait_for(r"hello (\\w+)"); dev.kill()   # SIGKILL: a power cut
    relay = Relay(gateway_port, drop=0.3, seed=1)  # device -> relay -> gateway
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code

FIRMWARE = Path(__file__).resolve().parents[2] / "device-firmware" / "micropython"
SOURCE_ONLY = {"main.py", "__init__.py"}  # a board runs main.py from source


def build_firmware(mpy_cross: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted(FIRMWARE.glob("*.py")):
        if src.name == "main.py":
            (out / src.name).write_bytes(src.read_bytes())
        elif src.name not in SOURCE_ONLY:
            subprocess.run([mpy_cross, "-o", str(out / f"{src.stem}.mpy"), str(src)], check=True)
    return out


class Device:
    """One firmware process; its data dir survives kill() and start() (the flash)."""

    def __init__(self, micropython: str, fw: Path, config: dict[str, Any], tmp: Path, heap: str = "64k"):
        self.micropython = micropython
        self.fw = fw
        self.heap = heap
        self.dir = tmp
        self.data = tmp / "data"
        self.config = {"data": str(self.data), **config}
        self.config_path = tmp / "device.json"
        self.config_path.write_text(json.dumps(self.config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0
        self.log_path = tmp / "device-0.log"

    def start(self) -> Device:
        assert self.proc is None or self.proc.poll() is not None
        self.boots += 1
        self.log_path = self.dir / f"device-{self.boots}.log"
        env = dict(os.environ, MICROPYPATH=f".frozen:{self.fw}")
        argv = [self.micropython, "-X", f"heapsize={self.heap}", str(self.fw / "main.py")]
        argv.append(str(self.config_path))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match[str]:
        """First match of ``pattern`` in this boot's log past offset ``after`` (a deadline only)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(), after)
            if m:
                return m
            if not self.alive():
                m = rx.search(self.log(), after)
                if m:
                    return m
                raise AssertionError(f"device exited waiting for {pattern!r}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; log:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.data / "state.json").read_text())
        return data


class Relay:
    """UDP relay between one device and the gateway on 127.0.0.1, in a thread of its own.

    Drops ``drop`` of the datagrams each way (seeded), and records the Uri-Path of every
    request the device sends, so tests can count blob GETs.
    """

    def __init__(self, upstream: int, drop: float = 0.0, seed: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream)
        self.drop = drop
        self.rng = random.Random(seed)
        self.paths: list[str] = []
        self.payloads: dict[str, bytes] = {}  # last request payload per path
        self.last_response = b""  # payload of the last 2.05 Content from the gateway
        self.requests: list[tuple[str, int | None]] = []  # (Uri-Path, Block2 number or None)
        self.responses: list[tuple[str, int]] = []  # (Uri-Path of the request, response code)
        self._tokens: dict[bytes, str] = {}
        self.dropped = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        relay = self
        device: list[tuple[str, int]] = []

        class Up(asyncio.DatagramProtocol):  # relay <-> gateway
            def datagram_received(self, data: bytes, addr: Any) -> None:
                try:
                    msg = Message.decode(data)
                    if msg.code == Code.CONTENT and msg.payload and msg.opt.block2 is None:
                        relay.last_response = msg.payload
                    if msg.code.is_response() and msg.token in relay._tokens:
                        relay.responses.append((relay._tokens[msg.token], int(msg.code)))
                except Exception:
                    pass
                if device and not relay._lose():
                    front.sendto(data, device[0])

        class Front(asyncio.DatagramProtocol):  # device <-> relay
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not device or device[0] != addr:
                    device[:] = [addr]
                try:
                    msg = Message.decode(data)
                    if msg.code.is_request():
                        path = "/" + "/".join(msg.opt.uri_path)
                        relay.paths.append(path)
                        b2 = msg.opt.block2
                        relay.requests.append((path, None if b2 is None else b2.block_number))
                        relay._tokens[msg.token] = path
                        if msg.payload:
                            relay.payloads[path] = msg.payload
                except Exception:
                    pass
                if not relay._lose():
                    back.sendto(data)

        loop = asyncio.get_running_loop()
        front_t, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        back_t, _ = await loop.create_datagram_endpoint(Up, remote_addr=self.upstream)
        front: Any = front_t
        back: Any = back_t
        self.port = front_t.get_extra_info("sockname")[1]

    def _lose(self) -> bool:
        if self.drop and self.rng.random() < self.drop:
            self.dropped += 1
            return True
        return False

    def blob_gets(self, hexsha: str) -> int:
        return sum(1 for p in list(self.paths) if p == f"/b/{hexsha}")

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
