"""The durable half of the store: SQLAlchemy Core over SQLite or PostgreSQL.

Every function here is synchronous and runs on the store's single writer thread (or, for history
reads, a reader thread), so the event loop never waits on the database.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger("fleetlet.store.sql")

metadata = MetaData()

meta_table = Table(
    "fleetlet_meta",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", BigInteger, nullable=False),
    Column("compacted", BigInteger, nullable=False),
)

objects_table = Table(
    "fleetlet_objects",
    metadata,
    Column("resource", String(64), primary_key=True),
    Column("namespace", String(253), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("revision", BigInteger, nullable=False),
    Column("value", Text, nullable=False),
)

log_table = Table(
    "fleetlet_log",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("resource", String(64), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("type", String(8), nullable=False),
    Column("value", Text, nullable=False),
)

# Rows per multi-row statement: 500 x 6 parameters stays far below SQLite's 32,766 and
# PostgreSQL's 65,535 parameters per statement.
_ROWS_PER_STATEMENT = 500

# One advisory-lock key for "the active writer of this database" on PostgreSQL.
_PG_WRITER_LOCK = 0x666C6565746C6574 & 0x7FFFFFFFFFFFFFFF


@dataclass(slots=True)
class Row:
    """One committed change: the log row, and what it does to the objects table."""

    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: str
    namespace: str
    name: str
    value: str


def normalize_url(url: str) -> str:
    """Accept the async driver names operators know, but use sync drivers on our writer thread."""
    if url.startswith("postgresql+asyncpg://"):
        return "postgresql+psycopg://" + url[len("postgresql+asyncpg://") :]
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + url[len("sqlite+aiosqlite://") :]
    return url


class SQLBackend:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self.engine: Engine = create_engine(self.url, pool_pre_ping=self.dialect != "sqlite")
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._lock_conn: Any = None
        self._write_conn: Any = None  # the writer thread's own DB-API connection
        self._sql_cache: dict[tuple[str, int], str] = {}
        # DB-API paramstyle of the driver: sqlite3 is qmark, psycopg is format.
        self._param = "?" if self.dialect == "sqlite" else "%s"
        # Set by the writer; read by metrics.
        self.last_compaction_step_ms = 0.0

    # -- lifecycle (writer thread) ---------------------------------------------------------
    def try_become_writer(self) -> bool:
        """On PostgreSQL, hold a session advisory lock so exactly one server writes (others wait)."""
        if self.dialect != "postgresql":
            return True
        if self._lock_conn is None:
            self._lock_conn = self.engine.connect()
        got = self._lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_WRITER_LOCK})
        ok = bool(got.scalar())
        self._lock_conn.commit()
        return ok

    def setup(self) -> tuple[int, int]:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            row = conn.execute(select(meta_table.c.revision, meta_table.c.compacted)).first()
            if row is None:
                conn.execute(meta_table.insert().values(id=1, revision=0, compacted=0))
                return 0, 0
            return int(row[0]), int(row[1])

    def load_objects(self) -> list[tuple[str, str, str, int, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    objects_table.c.resource,
                    objects_table.c.namespace,
                    objects_table.c.name,
                    objects_table.c.revision,
                    objects_table.c.value,
                )
            ).all()
        return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    def close(self) -> None:
        self._drop_write_conn()
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except Exception:  # the connection may already be gone; nothing to release then
                pass
            self._lock_conn = None
        self.engine.dispose()

    # -- writes (writer thread) ------------------------------------------------------------
    def commit(self, rows: Sequence[Row], revision: int) -> None:
        """Write one batch in one transaction: one fsync for the whole group.

        Statements go straight to the DB-API driver: SQLAlchemy's per-row parameter processing
        cost more than the fsync at batch sizes of 64 and up. Each statement inserts many rows
        (multi-row VALUES) rather than one executemany step per row: the driver releases the GIL
        around every step and must win it back from the busy event loop each time. Alone that
        saves ~6% of a 15-row commit's CPU; in the server it is one GIL round trip a statement.
        """
        # The objects table needs only each key's final state in this batch (rows are in order).
        last: dict[tuple[str, str, str], Row] = {}
        for r in rows:
            last[(r.resource, r.namespace, r.name)] = r
        upserts = [
            (r.resource, r.namespace, r.name, r.revision, r.value)
            for r in last.values()
            if r.type != "DELETED"
        ]
        deletes = [(r.resource, r.namespace, r.name) for r in last.values() if r.type == "DELETED"]
        log_rows = [(r.revision, r.resource, r.namespace, r.name, r.type, r.value) for r in rows]
        p = self._param
        conn = self._writer_conn()
        cur = conn.cursor()
        try:
            cur.execute(f"UPDATE fleetlet_meta SET revision = {p} WHERE id = 1", (revision,))
            for sql, params in self._statements("log", log_rows):
                cur.execute(sql, params)
            for sql, params in self._statements("upsert", upserts):
                cur.execute(sql, params)
            for sql, params in self._statements("delete", deletes):
                cur.execute(sql, params)
            conn.commit()
        except BaseException:
            # Whatever failed (a constraint, a lost PostgreSQL connection), roll back and start
            # the next batch on a fresh connection from the pool.
            with contextlib.suppress(Exception):
                cur.close()
            self._drop_write_conn()
            raise
        cur.close()

    def _statements(self, which: str, rows: Sequence[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
        """(sql, flat parameters) for ``rows``, at most _ROWS_PER_STATEMENT rows a statement."""
        for i in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[i : i + _ROWS_PER_STATEMENT]
            key = (which, len(chunk))
            sql = self._sql_cache.get(key)
            if sql is None:
                sql = self._sql_cache[key] = self._multi_row_sql(which, len(chunk))
            yield sql, [v for row in chunk for v in row]

    def _multi_row_sql(self, which: str, n: int) -> str:
        p = self._param
        if which == "log":
            values = ", ".join([f"({p}, {p}, {p}, {p}, {p}, {p})"] * n)
            return (
                f"INSERT INTO fleetlet_log (revision, resource, namespace, name, type, value) VALUES {values}"
            )
        if which == "upsert":
            values = ", ".join([f"({p}, {p}, {p}, {p}, {p})"] * n)
            return (
                f"INSERT INTO fleetlet_objects (resource, namespace, name, revision, value) VALUES {values} "
                "ON CONFLICT (resource, namespace, name) "
                "DO UPDATE SET revision = excluded.revision, value = excluded.value"
            )
        values = ", ".join([f"({p}, {p}, {p})"] * n)
        return f"DELETE FROM fleetlet_objects WHERE (resource, namespace, name) IN (VALUES {values})"

    def _writer_conn(self) -> Any:
        """The writer's DB-API connection, checked out once and kept.

        A pool checkout plus SQLAlchemy's transaction bookkeeping per batch cost about as much
        GIL time as the statements themselves (bench/store profile); the writer is one thread,
        so one connection serves it. Pragmas (WAL, synchronous=FULL) come from the pool's
        connect hook as for any connection.
        """
        if self._write_conn is None:
            self._write_conn = self.engine.raw_connection()
        return self._write_conn

    def _drop_write_conn(self) -> None:
        conn, self._write_conn = self._write_conn, None
        if conn is not None:
            try:
                conn.rollback()
            except Exception:  # already broken: nothing to roll back
                pass
            try:
                conn.invalidate()  # never return a connection in an unknown state to the pool
            except Exception:
                pass

    def _upsert(self) -> Any:
        ins: Any = (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(objects_table)
        return ins.on_conflict_do_update(
            index_elements=["resource", "namespace", "name"],
            set_={"revision": ins.excluded.revision, "value": ins.excluded.value},
        )

    def compact_step(self, target: int, current_compacted: int, max_rows: int) -> int:
        """Delete log rows up to ``target`` in one short transaction; returns the new compacted rev."""
        t0 = time.perf_counter()
        upto = min(target, current_compacted + max_rows)
        with self.engine.begin() as conn:
            conn.execute(delete(log_table).where(log_table.c.revision <= upto))
            conn.execute(update(meta_table).where(meta_table.c.id == 1).values(compacted=upto))
        self.last_compaction_step_ms = (time.perf_counter() - t0) * 1000
        return upto

    # -- reads (any thread) ----------------------------------------------------------------
    def history(self, resource: str, since: int, upto: int) -> list[Row]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    log_table.c.revision,
                    log_table.c.type,
                    log_table.c.resource,
                    log_table.c.namespace,
                    log_table.c.name,
                    log_table.c.value,
                )
                .where(
                    log_table.c.resource == resource,
                    log_table.c.revision > since,
                    log_table.c.revision <= upto,
                )
                .order_by(log_table.c.revision)
            ).all()
        return [Row(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def log_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(text("count(*)")).select_from(log_table)).scalar() or 0)

    def database_bytes(self) -> int:
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                pages = conn.execute(text("PRAGMA page_count")).scalar() or 0
                size = conn.execute(text("PRAGMA page_size")).scalar() or 0
                return int(pages) * int(size)
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL + synchronous=FULL: an acknowledged commit survives kill -9 and power loss.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    # Keep the WAL file from growing without bound between checkpoints.
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()
