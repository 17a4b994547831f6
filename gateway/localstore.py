"""The gateway's local state: one SQLite file (WAL), read and written off the event loop.

What survives a restart, so devices keep being served while the API server is away:

- ``desired``: per device, the encoded desired document, its gen, ETag and content hash.
- ``blobs``: content-addressed files (sha256 -> bytes) that documents refer to.
- ``devices``: devices of this gateway with their credential hash (registration works offline).
- ``pending``: status patches not yet delivered, one row per object (the latest wins).
- ``events``: Events not yet delivered (bounded).
- ``meta``: small values such as the last seen resourceVersions.

Every method is async and runs its statement on the store's own worker thread: one thread
serializes access to the single connection (rather than several of asyncio's default executor
threads waiting on a lock, each with its own malloc arena), and SQLite's page cache is capped at
``CACHE_KIB`` (SQLite's default is 2 MiB per connection; the OS page cache keeps the file warm).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS desired (
    device TEXT PRIMARY KEY, gen INTEGER NOT NULL, etag BLOB NOT NULL,
    content_hash BLOB NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (sha256 BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (name TEXT PRIMARY KEY, credential_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, patch TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

MAX_QUEUED_EVENTS = 200
CACHE_KIB = 512


@dataclass(frozen=True, slots=True)
class StoredDoc:
    device: str
    gen: int
    etag: bytes
    content_hash: bytes
    doc: bytes


class LocalStore:
    """``store = await LocalStore.open(data_dir / "gateway.db")``; ``await store.close()``."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor | None = None) -> None:
        self._conn = conn
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-store")

    @classmethod
    async def open(cls, path: Path | str, *, cache_kib: int = CACHE_KIB) -> LocalStore:
        def connect() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            conn.executescript(_SCHEMA)
            return conn

        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-store")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor)

    async def close(self) -> None:
        try:
            await self._run(self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        c = self._conn
        c.execute("BEGIN")
        try:
            for sql, args in statements:
                c.execute(sql, args)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # ---- desired documents -------------------------------------------------------------

    async def load_docs(self) -> list[StoredDoc]:
        def q() -> list[StoredDoc]:
            rows = self._conn.execute("SELECT device, gen, etag, content_hash, doc FROM desired").fetchall()
            return [StoredDoc(r[0], int(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]

        return await self._run(q)

    async def put_doc(self, doc: StoredDoc) -> None:
        await self._run(
            lambda: self._conn.execute(
                "INSERT OR REPLACE INTO desired VALUES (?, ?, ?, ?, ?)",
                (doc.device, doc.gen, doc.etag, doc.content_hash, doc.doc),
            )
        )

    async def delete_doc(self, device: str) -> None:
        await self._run(lambda: self._conn.execute("DELETE FROM desired WHERE device = ?", (device,)))

    # ---- blobs ----------------------------------------------------------------------------

    async def put_blobs(self, blobs: dict[bytes, bytes]) -> None:
        if blobs:
            await self._run(
                lambda: self._tx(("INSERT OR IGNORE INTO blobs VALUES (?, ?)", kv) for kv in blobs.items())
            )

    async def get_blob(self, sha256: bytes) -> bytes | None:
        def q() -> bytes | None:
            row = self._conn.execute("SELECT data FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(q)

    async def has_blob(self, sha256: bytes) -> bool:
        def q() -> bool:
            return (
                self._conn.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)).fetchone() is not None
            )

        return await self._run(q)

    async def gc_blobs(self, keep: set[bytes]) -> int:
        """Delete blobs no document refers to; answers how many went."""

        def q() -> int:
            have = [bytes(r[0]) for r in self._conn.execute("SELECT sha256 FROM blobs")]
            drop = [h for h in have if h not in keep]
            self._tx(("DELETE FROM blobs WHERE sha256 = ?", (h,)) for h in drop)
            return len(drop)

        return await self._run(q)

    # ---- devices --------------------------------------------------------------------------

    async def load_devices(self) -> dict[str, str]:
        def q() -> dict[str, str]:
            return {
                str(r[0]): str(r[1]) for r in self._conn.execute("SELECT name, credential_hash FROM devices")
            }

        return await self._run(q)

    async def put_device(self, name: str, credential_hash: str) -> None:
        await self._run(
            lambda: self._conn.execute(
                "INSERT OR REPLACE INTO devices VALUES (?, ?)", (name, credential_hash)
            )
        )

    async def delete_device(self, name: str) -> None:
        await self._run(
            lambda: self._tx(
                [
                    ("DELETE FROM devices WHERE name = ?", (name,)),
                    ("DELETE FROM desired WHERE device = ?", (name,)),
                ]
            )
        )

    # ---- pending status patches ---------------------------------------------------------

    async def load_pending(self) -> dict[str, dict[str, Any]]:
        def q() -> dict[str, dict[str, Any]]:
            return {str(k): json.loads(v) for k, v in self._conn.execute("SELECT key, patch FROM pending")}

        return await self._run(q)

    async def save_pending(self, patches: dict[str, dict[str, Any]], delivered: Iterable[str] = ()) -> None:
        """Upsert ``patches`` (latest wins) and forget ``delivered`` keys, in one transaction."""
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT OR REPLACE INTO pending VALUES (?, ?)", (k, json.dumps(v, separators=(",", ":"))))
            for k, v in patches.items()
        ]
        stmts += [("DELETE FROM pending WHERE key = ?", (k,)) for k in delivered]
        if stmts:
            await self._run(lambda: self._tx(stmts))

    # ---- queued events --------------------------------------------------------------------

    async def queue_event(self, body: dict[str, Any]) -> None:
        def q() -> None:
            self._tx(
                [
                    ("INSERT INTO events (body) VALUES (?)", (json.dumps(body),)),
                    (
                        "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                        (MAX_QUEUED_EVENTS,),
                    ),
                ]
            )

        await self._run(q)

    async def take_events(self) -> list[tuple[int, dict[str, Any]]]:
        def q() -> list[tuple[int, dict[str, Any]]]:
            return [(int(i), json.loads(b)) for i, b in self._conn.execute("SELECT id, body FROM events")]

        return await self._run(q)

    async def delete_event(self, event_id: int) -> None:
        await self._run(lambda: self._conn.execute("DELETE FROM events WHERE id = ?", (event_id,)))

    # ---- meta -----------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        def q() -> str | None:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return str(row[0]) if row else None

        return await self._run(q)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(lambda: self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))
