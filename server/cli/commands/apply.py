"""``fleetlet apply -f``: create or update objects from manifests, like kubectl apply."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import click

from ...client.errors import ApiError
from ..context import CliState, pass_state
from ..errors import CliError, UserError, format_error
from ..manifests import Manifest, load_manifests
from ..merge import plan_update, with_last_applied

if TYPE_CHECKING:
    from ...client.api import ApiClient


def resolve_namespace(m: Manifest, flag: str | None) -> str | None:
    if not m.resource.namespaced:
        return None
    if m.namespace and flag and m.namespace != flag:
        raise UserError(
            f'{m.where}: the namespace from the provided object "{m.namespace}" does not match the '
            f"namespace \"{flag}\". You must pass '--namespace={m.namespace}' to perform this operation."
        )
    return m.namespace or flag or "default"


async def apply_one(api: ApiClient, m: Manifest, namespace: str | None) -> str:
    """Create or update one object; answers "created", "configured" or "unchanged"."""
    for attempt in (1, 2):
        try:
            try:
                live = await api.get(m.resource, m.name, namespace)
            except ApiError as e:
                if not e.is_not_found:
                    raise
                body = with_last_applied(m.obj)
                body["metadata"].pop("resourceVersion", None)  # not allowed on create
                if namespace:
                    body["metadata"]["namespace"] = namespace
                await api.create(body, namespace)
                return "created"
            update = plan_update(live, copy.deepcopy(m.obj))
            if update is None:
                return "unchanged"
            await api.replace(update, namespace)
            return "configured"
        except ApiError as e:
            # 409: someone wrote between our GET and PUT (or created it first): read again, once.
            # Not when the manifest carries its own resourceVersion: that conflict is the answer.
            if e.is_conflict and attempt == 1 and not m.obj["metadata"].get("resourceVersion"):
                continue
            raise
    raise AssertionError("unreachable")


@click.command("apply")
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    metavar="PATH",
    help="Manifest file, folder of *.yaml/*.yml/*.json, or - for stdin. Repeatable.",
)
@click.option("-n", "--namespace", default=None, help="Namespace for objects that don't name one.")
@pass_state
def apply_cmd(state: CliState, filenames: tuple[str, ...], namespace: str | None) -> None:
    """Create or update objects from YAML/JSON manifests."""
    manifests = load_manifests(filenames)
    targets = [(m, resolve_namespace(m, namespace)) for m in manifests]

    async def go(api: ApiClient) -> list[str]:
        failures: list[str] = []
        for m, ns in targets:
            try:
                outcome = await apply_one(api, m, ns)
            except ApiError as e:
                if e.code in (0, 401):
                    raise  # no point trying the other documents
                failures.append(format_error(e))
                continue
            click.echo(f"{m.resource.qualified}/{m.name} {outcome}")
        return failures

    failures = state.run(go)
    if failures:
        raise CliError("\n".join(failures))


COMMANDS = [apply_cmd]
