"""First-start bootstrap: the admin Token, ``<data_dir>/admin.token`` and the CLI config file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ..api.resources import API_VERSION
from ..store import Store
from ..store.errors import AlreadyExists, NotFound
from .tokens import generate_token, hash_token

log = logging.getLogger("fleetlet.auth")

ADMIN_TOKEN_NAME = "admin"
TOKEN_FILE = "admin.token"


def default_config_path() -> Path:
    env = os.environ.get("FLEETLET_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "fleetlet" / "config.yaml"


def _make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    cur = folder
    while not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (temp file, fsync, rename)."""
    _make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _admin_token_obj(token_hash: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Token",
        "metadata": {"name": ADMIN_TOKEN_NAME, "labels": {"fleetlet.io/bootstrap": "true"}},
        "spec": {"role": "admin", "tokenHash": token_hash, "description": "created at first start"},
    }


async def ensure_admin(store: Store, data_dir: Path, server_url: str, config_path: Path | None = None) -> str:
    """Make sure an admin token exists and is written out; return it.

    First start: create Token "admin", write ``admin.token`` and the CLI config (both 0600).
    Later starts: keep the token when ``admin.token`` still matches the stored hash (no rotation);
    rotate only when the file is missing or no longer matches.
    """
    data_dir = Path(data_dir)
    token_file = data_dir / TOKEN_FILE
    config = Path(config_path) if config_path is not None else default_config_path()
    existing = store.peek("tokens", "", ADMIN_TOKEN_NAME)
    current_hash = (existing or {}).get("spec", {}).get("tokenHash")
    token: str | None = None
    if token_file.exists():
        candidate = token_file.read_text(encoding="utf-8").strip()
        if current_hash and hash_token(candidate) == current_hash:
            token = candidate
    if token is not None:
        if not config.exists():
            write_private(config, yaml.safe_dump({"server": server_url, "token": token}, sort_keys=False))
            log.info("wrote CLI config %s", config)
        return token

    token = generate_token(ADMIN_TOKEN_NAME)
    token_hash = hash_token(token)
    if existing is None:
        try:
            await store.create("tokens", _admin_token_obj(token_hash))
        except AlreadyExists:  # raced with another starter: take it over
            existing = await store.get("tokens", "", ADMIN_TOKEN_NAME)
    if existing is not None:
        log.warning("admin token in %s is missing or stale; issuing a new admin token", token_file)

        def rotate(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"] = _admin_token_obj(token_hash)["spec"]
            return obj

        try:
            await store.guaranteed_update("tokens", "", ADMIN_TOKEN_NAME, rotate)
        except NotFound:
            await store.create("tokens", _admin_token_obj(token_hash))
    write_private(token_file, token + "\n")
    write_private(config, yaml.safe_dump({"server": server_url, "token": token}, sort_keys=False))
    log.info("admin token written to %s and CLI config to %s", token_file, config)
    return token
