"""``fleetlet token create``: mint a bearer token; the plaintext is shown once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from ...client.resources import API_VERSION
from ..context import CliState, pass_state
from ..errors import UserError

if TYPE_CHECKING:
    from ...client.api import ApiClient

ROLES = ("admin", "operator", "viewer", "gateway")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``7d``, ``2w`` to seconds."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UserError(f'invalid duration "{text}": use forms like 3600, 90s, 15m, 1h30m, 7d')
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f'invalid duration "{text}": it must be positive')
    return seconds


@click.group("token")
def token_group() -> None:
    """Manage API bearer tokens."""


@token_group.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option("--gateway", default=None, help="The gateway this token acts for (role gateway).")
@click.option("--namespace", "namespaces", multiple=True, help="Limit an operator to these namespaces.")
@click.option("--ttl", default=None, metavar="DURATION", help="Lifetime, e.g. 24h, 7d (default: no expiry).")
@pass_state
def token_create(
    state: CliState, role: str, gateway: str | None, namespaces: tuple[str, ...], ttl: str | None
) -> None:
    """Create a token and print it (only this once: the server keeps just a hash)."""
    if role == "gateway" and not gateway:
        raise UserError("--gateway NAME is required for --role gateway")
    if gateway and role != "gateway":
        raise UserError("--gateway only applies to --role gateway")
    spec: dict[str, Any] = {"role": role}
    if gateway:
        spec["gateway"] = gateway
    if namespaces:
        spec["namespaces"] = list(namespaces)
    if ttl:
        spec["ttlSeconds"] = parse_duration(ttl)
    body = {"apiVersion": API_VERSION, "kind": "Token", "metadata": {}, "spec": spec}

    async def go(api: ApiClient) -> dict[str, Any]:
        return await api.create(body)

    created = state.run(go)
    token = (created.get("status") or {}).get("token")
    if not token:
        raise UserError(
            "the server created the token but did not return it; delete it and try again: "
            f"fleetlet delete token {(created.get('metadata') or {}).get('name', '')}"
        )
    click.echo(token)


COMMANDS = [token_group]
