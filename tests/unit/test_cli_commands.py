"""CLI behaviour that needs no server: help, one-line errors, option parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fleetlet.server.cli.commands import token as token_cmd
from fleetlet.server.cli.errors import UserError
from fleetlet.server.cli.main import cli

from tests.fixtures import free_tcp_port


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLET_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.delenv("FLEETLET_SERVER", raising=False)
    monkeypatch.delenv("FLEETLET_TOKEN", raising=False)


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_help_lists_every_command_with_one_line() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for name in ("apply", "get", "describe", "delete", "token", "server", "config", "version"):
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(maxsplit=1)) == 2, line


def test_unknown_kind_before_any_connection() -> None:
    code, out, err = run("--server", "127.0.0.1:1", "get", "foo")
    assert (code, out, err) == (1, "", 'error: the server doesn\'t have a resource type "foo"\n')


def test_connection_refused_one_line() -> None:
    port = free_tcp_port()
    code, _, err = run("--server", f"http://127.0.0.1:{port}", "get", "devices")
    assert code == 1
    assert err == (
        f"error: cannot reach the fleetlet server at http://127.0.0.1:{port}: connection refused; "
        "is `fleetlet server` running?\n"
    )


def test_malformed_yaml_is_reported_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Workload\nmetadata:\n  name: x\n   oops: 1\n")
    code, _, err = run("--server", "127.0.0.1:1", "apply", "-f", str(bad))
    assert code == 1
    assert err.startswith(f"error: {bad}:4: malformed YAML: ") and err.count("\n") == 1


def test_config_view_redacts_and_names_sources(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("server: http://10.0.0.0:1\ntoken: flt_abc_topsecret\n")
    code, out, _ = run("--server", "127.0.0.1:9999", "config", "view")
    assert code == 0
    assert "topsecret" not in out and "token: flt_abc_REDACTED" in out
    assert "server: http://127.0.0.1:9999" in out and "server from: flag; token from: file" in out


def test_server_without_api_module_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr("fleetlet.server.cli.commands.server.importlib.import_module", missing)
    code, _, err = run("server", "--listen", "127.0.0.1:0")
    assert code == 1
    assert err == (
        "error: the API server is not part of this installation "
        "(module fleetlet.server.api.main is missing)\n"
    )


def test_token_role_gateway_needs_gateway() -> None:
    code, _, err = run("--server", "127.0.0.1:1", "token", "create", "--role", "gateway")
    assert (code, err) == (1, "error: --gateway NAME is required for --role gateway\n")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert token_cmd.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "0", "1h 2m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UserError, match="invalid duration"):
        token_cmd.parse_duration(text)


def test_delete_needs_a_name() -> None:
    code, _, err = run("delete", "wl")
    assert code == 1 and err.startswith("error: resource(s) were provided, but no name was specified")
