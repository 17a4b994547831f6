"""``fleetlet describe``: a readable summary of one object and its Events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ...client.errors import ApiError
from ..context import CliState, pass_state
from ..printers import describe_text
from .get import namespace_scope, split_kind_and_names

if TYPE_CHECKING:
    from ...client.api import ApiClient


@click.command("describe")
@click.argument("kind")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@pass_state
def describe_cmd(state: CliState, kind: str, names: tuple[str, ...], namespace: str | None) -> None:
    """Show details of objects, with their Events."""
    rt, name_list = split_kind_and_names(kind, names)
    ns = namespace_scope(rt, namespace, False)

    async def go(api: ApiClient) -> list[str]:
        if name_list:
            objs = [await api.get(rt, n, ns) for n in name_list]
        else:
            objs = (await api.list_all(rt, ns)).get("items") or []
        texts = []
        for obj in objs:
            events, err = await events_for(api, rt.kind, obj, ns)
            texts.append(describe_text(rt, obj, events, events_error=err))
        return texts

    texts = state.run(go)
    if not texts:
        click.echo("No resources found" + (f" in {ns} namespace." if ns else ""), err=True)
    click.echo("\n\n".join(texts))


async def events_for(
    api: ApiClient, kind: str, obj: dict[str, Any], ns: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    name = (obj.get("metadata") or {}).get("name", "")
    selector = f"involvedObject.name={name},involvedObject.kind={kind}"
    try:
        # Events of cluster-scoped objects may live in any namespace: look in all of them.
        listing = await api.list_all("events", ns, field_selector=selector)
    except ApiError as e:
        if e.code in (0, 401):
            raise
        # A viewer may not read events; the object itself is still worth showing.
        return [], e.reason
    return list(listing.get("items") or []), None


COMMANDS = [describe_cmd]
