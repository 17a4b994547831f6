"""``fleetlet delete``: delete objects by name or from manifests, with a cascade policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ...client.errors import ApiError
from ...client.resources import ResourceType
from ..context import CliState, pass_state
from ..errors import CliError, UserError, format_error
from ..manifests import load_manifests
from .apply import resolve_namespace
from .get import namespace_scope, split_kind_and_names

if TYPE_CHECKING:
    from ...client.api import ApiClient

CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan"}


@click.command("delete")
@click.argument("args", nargs=-1)
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    metavar="PATH",
    help="Delete the objects named in these manifests (file, folder or -).",
)
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option(
    "--cascade",
    type=click.Choice(list(CASCADE)),
    default="background",
    show_default=True,
    help="What happens to dependents: background and foreground delete them, orphan keeps them.",
)
@click.option("--ignore-not-found", is_flag=True, help="Treat 'not found' as success.")
@pass_state
def delete_cmd(
    state: CliState,
    args: tuple[str, ...],
    filenames: tuple[str, ...],
    namespace: str | None,
    cascade: str,
    ignore_not_found: bool,
) -> None:
    """Delete objects by KIND NAME... or -f FILE."""
    targets: list[tuple[ResourceType, str, str | None]] = []
    if filenames:
        if args:
            raise UserError("give either KIND NAME... or -f FILE, not both")
        for m in load_manifests(filenames):
            targets.append((m.resource, m.name, resolve_namespace(m, namespace)))
    else:
        if not args:
            raise UserError("you must specify the type of resource and a name, or -f FILE")
        rt, names = split_kind_and_names(args[0], args[1:])
        if not names:
            raise UserError(
                f'resource(s) were provided, but no name was specified; use "fleetlet delete '
                f'{rt.plural} NAME" (deleting all objects of a kind is not supported)'
            )
        ns = namespace_scope(rt, namespace, False)
        targets = [(rt, n, ns) for n in names]

    async def go(api: ApiClient) -> list[str]:
        failures: list[str] = []
        for rt, name, ns in targets:
            try:
                await api.delete(rt, name, ns, propagation_policy=CASCADE[cascade])
            except ApiError as e:
                if e.is_not_found and ignore_not_found:
                    continue
                if e.code in (0, 401):
                    raise
                failures.append(format_error(e))
                continue
            click.echo(f'{rt.qualified} "{name}" deleted')
        return failures

    failures = state.run(go)
    if failures:
        raise CliError("\n".join(failures))


COMMANDS = [delete_cmd]
