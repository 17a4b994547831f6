"""The agent's small persistent state: what the engine's labels cannot tell us.

Restart counts, last exit codes and backoff deadlines must survive an agent restart and a
dockerd restart, so they live in one JSON file in the agent's data dir, written atomically
(temp file, fsync, rename, fsync of the directory): a crash leaves the old or the new file,
never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AgentState", "ContainerRecord", "WorkloadRecord"]

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class ContainerRecord:
    restarts: int = 0
    last_exit_code: int | None = None
    last_reason: str = ""  # Error, Completed, OOMKilled, Unhealthy
    last_message: str = ""
    last_finished_at: str = ""  # engine's FinishedAt of the last exit we accounted for
    crash_streak: int = 0  # consecutive exits without a long enough run: the backoff exponent
    backoff_until: float = 0.0  # unix time; a restart is due after it (0: none planned)
    last_backoff: float = 0.0  # seconds of the most recent backoff
    restart_pending: bool = False  # an exit was accounted and a restart is planned
    kill_reason: str = ""  # set before the agent kills it itself (liveness), read at exit


@dataclass
class WorkloadRecord:
    generation: int = 0
    spec_hash: str = ""
    containers: dict[str, ContainerRecord] = field(default_factory=dict)

    def container(self, name: str) -> ContainerRecord:
        rec = self.containers.get(name)
        if rec is None:
            rec = self.containers[name] = ContainerRecord()
        return rec


class AgentState:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.workloads: dict[str, WorkloadRecord] = {}
        self.boot_count = 0
        self.dirty = False

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentState:
        state = cls(path)
        try:
            raw = json.loads(state.path.read_text())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            # Corrupt state costs restart counts, never the containers: labels still rule.
            log.warning("agent state %s unreadable (%s); starting from labels only", state.path, exc)
            return state
        state.boot_count = int(raw.get("boot_count", 0))
        for uid, w in (raw.get("workloads") or {}).items():
            containers = {n: _record(c) for n, c in (w.get("containers") or {}).items()}
            state.workloads[uid] = WorkloadRecord(
                generation=int(w.get("generation", 0)),
                spec_hash=str(w.get("spec_hash", "")),
                containers=containers,
            )
        return state

    def workload(self, uid: str) -> WorkloadRecord:
        rec = self.workloads.get(uid)
        if rec is None:
            rec = self.workloads[uid] = WorkloadRecord()
            self.dirty = True
        return rec

    def forget(self, uid: str) -> None:
        if self.workloads.pop(uid, None) is not None:
            self.dirty = True

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "boot_count": self.boot_count,
            "workloads": {uid: asdict(w) for uid, w in sorted(self.workloads.items())},
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        data = json.dumps(self.to_json(), indent=1, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.dirty = False

    def save_if_dirty(self) -> None:
        if self.dirty:
            self.save()


def _record(raw: Any) -> ContainerRecord:
    known = set(ContainerRecord.__dataclass_fields__)
    return ContainerRecord(**{k: v for k, v in dict(raw).items() if k in known})
