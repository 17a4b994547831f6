"""Child processes of ``fleetlet up``: each in its own session, logging into a file.

child = Child("gateway", argv, log_dir)
await child.start()
...
await stop_all([devices..., gateway, server])   # SIGTERM, wait, SIGKILL the stragglers
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Child", "stop_all"]


class Child:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(os.environ) | dict(env or {})
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once per start
            log.write(f"--- fleetlet up: start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # Own session: Ctrl-C in the terminal reaches only `fleetlet up`, which then
                # stops the children in order (devices first, the server last).
                start_new_session=True,
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True if it exited within ``timeout`` seconds."""
        if self.proc is None:
            return True
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await stop_all([self], timeout)


async def stop_all(children: Sequence[Child], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """SIGTERM every child at once, wait up to ``timeout``, SIGKILL what is left, reap all."""
    live = [c for c in children if c.running()]
    for c in live:
        c.signal(signal.SIGTERM)
    done = await asyncio.gather(*(c.wait(timeout) for c in live))
    for c, ok in zip(live, done, strict=True):
        if not ok:
            c.signal(signal.SIGKILL)
            await c.wait(5.0)
    for c in children:  # leftovers a child spawned in its own group
        if c.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
