"""``fleetlet version``: client and server versions."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import click

from ..context import CliState, pass_state

if TYPE_CHECKING:
    from ...client.api import ApiClient


def client_version() -> str:
    try:
        return version("fleetlet")
    except PackageNotFoundError:
        return "unknown"


@click.command("version")
@click.option("--client", "client_only", is_flag=True, help="Only the client version (no server needed).")
@pass_state
def version_cmd(state: CliState, client_only: bool) -> None:
    """Print the client and server versions."""
    click.echo(f"Client Version: {client_version()}")
    if client_only:
        return

    async def go(api: ApiClient) -> dict[str, Any]:
        return await api.version()

    info = state.run(go)
    server = info.get("version") or info.get("gitVersion") or info.get("fleetlet") or info
    click.echo(f"Server Version: {server}")


COMMANDS = [version_cmd]
