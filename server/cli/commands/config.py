"""``fleetlet config view``: the effective client configuration, token redacted."""

from __future__ import annotations

import click
import yaml

from ..context import CliState, pass_state


@click.group("config")
def config_group() -> None:
    """Show the client configuration."""


@config_group.command("view")
@click.option("--raw", is_flag=True, help="Show the token itself instead of redacting it.")
@pass_state
def config_view(state: CliState, raw: bool) -> None:
    """Print the server and token in effect and where each comes from."""
    cfg = state.config()
    data = {"server": cfg.server, "token": cfg.token if raw else cfg.redacted()["token"]}
    exists = "exists" if cfg.config_path.exists() else "not found"
    click.echo(f"# config file: {cfg.config_path} ({exists})")
    click.echo(f"# server from: {cfg.server_source}; token from: {cfg.token_source}")
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip("\n"))


COMMANDS = [config_group]
