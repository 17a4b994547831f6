"""ClientConfig precedence: flags > env > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleetlet.server.client.config import DEFAULT_SERVER, ClientConfig, ConfigError, redact_token


@pytest.fixture
def cfg_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("server: http://file.example:1111\ntoken: flt_file_secret\n")
    monkeypatch.setenv("FLEETLET_CONFIG", str(path))
    monkeypatch.delenv("FLEETLET_SERVER", raising=False)
    monkeypatch.delenv("FLEETLET_TOKEN", raising=False)
    return path


def test_file_beats_default(cfg_file: Path) -> None:
    cfg = ClientConfig.load()
    assert (cfg.server, cfg.token) == ("http://file.example:1111", "flt_file_secret")
    assert (cfg.server_source, cfg.token_source) == ("file", "file")
    assert cfg.config_path == cfg_file


def test_env_beats_file(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLET_SERVER", "http://env.example:2222")
    monkeypatch.setenv("FLEETLET_TOKEN", "flt_env_secret")
    cfg = ClientConfig.load()
    assert (cfg.server, cfg.token) == ("http://env.example:2222", "flt_env_secret")
    assert cfg.server_source == "env"


def test_flags_beat_env(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLET_SERVER", "http://env.example:2222")
    monkeypatch.setenv("FLEETLET_TOKEN", "flt_env_secret")
    cfg = ClientConfig.load(server="http://flag.example:3333/", token="flt_flag_secret")
    assert (cfg.server, cfg.token) == ("http://flag.example:3333", "flt_flag_secret")
    assert (cfg.server_source, cfg.token_source) == ("flag", "flag")


def test_each_value_falls_back_on_its_own(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLET_TOKEN", "flt_env_secret")
    cfg = ClientConfig.load()
    assert cfg.server == "http://file.example:1111"
    assert cfg.token == "flt_env_secret"


def test_default_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLET_CONFIG", str(tmp_path / "missing.yaml"))
    monkeypatch.delenv("FLEETLET_SERVER", raising=False)
    monkeypatch.delenv("FLEETLET_TOKEN", raising=False)
    cfg = ClientConfig.load()
    assert cfg.server == DEFAULT_SERVER
    assert cfg.token is None


def test_host_port_gets_a_scheme(cfg_file: Path) -> None:
    assert ClientConfig.load(server="127.0.0.1:9000").server == "http://127.0.0.1:9000"


def test_default_path_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLEETLET_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ClientConfig.load().config_path == tmp_path / ".config" / "fleetlet" / "config.yaml"


def test_malformed_file_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server: http://x\ntoken: [unclosed\n")
    monkeypatch.setenv("FLEETLET_CONFIG", str(path))
    with pytest.raises(ConfigError, match=rf"{path}:\d+: malformed config file"):
        ClientConfig.load()


def test_non_mapping_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("- just\n- a list\n")
    monkeypatch.setenv("FLEETLET_CONFIG", str(path))
    with pytest.raises(ConfigError, match="must be a mapping"):
        ClientConfig.load()


def test_redaction_keeps_only_the_token_id() -> None:
    assert redact_token("flt_abc123_supersecret") == "flt_abc123_REDACTED"
    assert redact_token("something-else") == "REDACTED"
    assert redact_token(None) is None
