"""Client configuration: flags > env (FLEETLET_SERVER/FLEETLET_TOKEN) > config file > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"
ENV_SERVER = "FLEETLET_SERVER"
ENV_TOKEN = "FLEETLET_TOKEN"
ENV_CONFIG = "FLEETLET_CONFIG"


class ConfigError(Exception):
    """The config file exists but cannot be used."""


def default_config_path() -> Path:
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "fleetlet" / "config.yaml"


def normalize_server(server: str) -> str:
    """Accept ``host:port`` as kubectl does and add the scheme; drop a trailing slash."""
    server = server.strip()
    if "://" not in server:
        server = "http://" + server
    return server.rstrip("/")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    import yaml  # here, not at the top: the gateway imports this module but reads no config file

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: malformed config file: {getattr(e, 'problem', None) or e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config file must be a mapping like {{server: URL, token: TOKEN}}")
    return data


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str | None
    config_path: Path
    # Where each value came from ("flag", "env", "file", "default"): `config view` shows it.
    server_source: str = "default"
    token_source: str = "none"

    @classmethod
    def load(
        cls,
        server: str | None = None,
        token: str | None = None,
        config_path: Path | str | None = None,
    ) -> ClientConfig:
        path = Path(config_path).expanduser() if config_path is not None else default_config_path()
        file_data = read_config_file(path)

        srv: str
        if server:
            srv, srv_src = server, "flag"
        elif os.environ.get(ENV_SERVER):
            srv, srv_src = os.environ[ENV_SERVER], "env"
        elif file_data.get("server"):
            srv, srv_src = str(file_data["server"]), "file"
        else:
            srv, srv_src = DEFAULT_SERVER, "default"

        tok: str | None
        if token:
            tok, tok_src = token, "flag"
        elif os.environ.get(ENV_TOKEN):
            tok, tok_src = os.environ[ENV_TOKEN], "env"
        elif file_data.get("token"):
            tok, tok_src = str(file_data["token"]).strip(), "file"
        else:
            tok, tok_src = None, "none"

        return cls(
            server=normalize_server(srv),
            token=tok,
            config_path=path,
            server_source=srv_src,
            token_source=tok_src,
        )

    def redacted(self) -> dict[str, Any]:
        return {"server": self.server, "token": redact_token(self.token)}


def redact_token(token: str | None) -> str | None:
    """Keep the public id of ``flt_<id>_<secret>`` tokens (handy to find the Token object)."""
    if not token:
        return None
    parts = token.split("_")
    if len(parts) >= 3 and parts[0] == "flt":
        return f"flt_{parts[1]}_REDACTED"
    return "REDACTED"
