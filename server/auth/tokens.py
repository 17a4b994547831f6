"""Bearer tokens ``flt_<id>_<secret>``: generation, hashing, and an in-memory index of Token objects.

Only the SHA-256 of the whole token is stored (Token ``<id>``, ``spec.tokenHash``). The index (parsed
principals) is kept current by watching ``tokens``, and every lookup is checked against the store's
cache by resourceVersion, so a new token works and a deleted one fails the moment the write returns,
before the watch event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.status import ApiError
from ..store import Store
from ..store.errors import StoreError

log = logging.getLogger("fleetlet.auth")

RESOURCE = "tokens"
PREFIX = "flt_"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def random_id(length: int = 10) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def generate_token(token_id: str) -> str:
    """A new token for the Token object named ``token_id`` (which contains no underscore)."""
    return f"{PREFIX}{token_id}_{secrets.token_hex(24)}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    if not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not token_id or not secret:
        return None
    return token_id, secret


def parse_time(text: str) -> float:
    """Seconds since the epoch for an RFC 3339 timestamp; ValueError if malformed."""
    dt = datetime.fromisoformat(text.replace("z", "Z"))
    if dt.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return dt.timestamp()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the Token's name, role, and its scope."""

    name: str
    role: str
    gateway: str | None = None
    namespaces: frozenset[str] | None = None

    @property
    def user(self) -> str:
        return f"token:{self.name}"


@dataclass(frozen=True, slots=True)
class _Entry:
    token_hash: str
    principal: Principal
    expires_at: float | None  # epoch seconds; None for "never"
    resource_version: str
    bad_expiry: bool = False


def _entry_from(obj: dict[str, Any]) -> _Entry | None:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    token_hash = spec.get("tokenHash")
    role = spec.get("role")
    name = meta.get("name")
    if not (isinstance(token_hash, str) and isinstance(role, str) and isinstance(name, str)):
        return None
    namespaces = spec.get("namespaces")
    expires_at: float | None = None
    bad = False
    if spec.get("expiresAt"):
        try:
            expires_at = parse_time(str(spec["expiresAt"]))
        except ValueError:
            bad = True  # fail closed: an unreadable expiry never authenticates
    principal = Principal(
        name=name,
        role=role,
        gateway=spec.get("gateway") or None,
        namespaces=frozenset(namespaces) if namespaces else None,
    )
    return _Entry(token_hash, principal, expires_at, str(meta.get("resourceVersion", "")), bad)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "Unauthorized")


class TokenIndex:
    """Token id -> (hash, principal), kept current by a watch on ``tokens``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._entries: dict[str, _Entry] = {}
        # Token strings already checked against their entry's hash. An entry is replaced (a new
        # object) whenever its Token changes, so a stale pair never matches. Only verified
        # tokens are kept: a flood of bad tokens cannot grow it.
        self._verified: dict[str, _Entry] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            rev = await self._load()
            self._task = asyncio.create_task(self._follow(rev), name="fleetlet-token-index")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _load(self) -> int:
        result = await self._store.list(RESOURCE)
        entries: dict[str, _Entry] = {}
        for obj in result.items:
            entry = _entry_from(obj)
            if entry is not None:
                entries[entry.principal.name] = entry
        self._entries = entries
        return result.resource_version

    async def _follow(self, rev: int) -> None:
        while True:
            try:
                watcher = self._store.watch(RESOURCE, since=rev)
                try:
                    async for etype, ev in watcher:
                        if etype == "ERROR":
                            break
                        rev = ev.revision
                        if etype == "DELETED":
                            self._entries.pop(ev.name, None)
                            continue
                        entry = _entry_from(ev.object)
                        if entry is None:
                            self._entries.pop(ev.name, None)
                        else:
                            self._entries[ev.name] = entry
                finally:
                    watcher.close()
                if self._store.ready:  # cut off (overflow or compaction): relist, then follow again
                    rev = await self._load()
                else:
                    return
            except asyncio.CancelledError:
                raise
            except StoreError as e:
                log.warning("token index: %s; relisting", e)
                await asyncio.sleep(1.0)
                rev = await self._load()

    def _entry(self, token_id: str) -> _Entry | None:
        obj = self._store.peek(RESOURCE, "", token_id)
        if obj is None:
            self._entries.pop(token_id, None)
            return None
        entry = self._entries.get(token_id)
        if entry is None or entry.resource_version != obj["metadata"].get("resourceVersion"):
            entry = _entry_from(obj)
            if entry is None:
                return None
            self._entries[token_id] = entry
        return entry

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this Authorization header, or a 401 ApiError."""
        if not authorization:
            raise unauthorized("Unauthorized: no bearer token (send 'Authorization: Bearer flt_...')")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("Unauthorized: the Authorization header must be 'Bearer <token>'")
        parsed = parse_token(token)
        entry = self._entry(parsed[0]) if parsed else None
        if entry is None:
            raise unauthorized("Unauthorized: unknown token")
        if self._verified.get(token) is not entry:
            if not hmac.compare_digest(entry.token_hash, hash_token(token)):
                raise unauthorized("Unauthorized: unknown token")
            if len(self._verified) >= 4096:  # deleted tokens' pairs linger: start over now and then
                self._verified.clear()
            self._verified[token] = entry  # one SHA-256 per token and change, not per request
        if entry.bad_expiry or (entry.expires_at is not None and entry.expires_at <= time.time()):
            raise unauthorized("Unauthorized: token expired")
        return entry.principal
