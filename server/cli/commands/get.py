"""``fleetlet get``: list or show objects as kubectl-like tables, or -o json|yaml|name; -w to follow."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ...client.errors import ApiError
from ...client.resources import ResourceType, resolve
from ..context import CliState, pass_state
from ..errors import CliError, UserError, format_error
from ..printers import as_list, columns_for, dump, object_name, render_table, table_rows

if TYPE_CHECKING:
    from ...client.api import ApiClient

OUTPUTS = ("wide", "json", "yaml", "name")


def split_kind_and_names(kind: str, names: tuple[str, ...]) -> tuple[ResourceType, list[str]]:
    """``get wl web`` and ``get wl/web`` both work, as in kubectl."""
    if "/" in kind:
        kind_part, _, name = kind.partition("/")
        rt = resolve(kind_part)
        extra = []
        for n in names:
            k2, _, n2 = n.partition("/")
            if not n2 or resolve(k2) != rt:
                raise UserError(
                    "there is no need to specify a resource type as a separate argument "
                    "when passing arguments in resource/name form"
                )
            extra.append(n2)
        return rt, [name, *extra]
    return resolve(kind), list(names)


def namespace_scope(rt: ResourceType, namespace: str | None, all_namespaces: bool) -> str | None:
    if not rt.namespaced or all_namespaces:
        return None
    return namespace or "default"


def no_resources_message(rt: ResourceType, ns: str | None) -> str:
    return f"No resources found in {ns} namespace." if rt.namespaced and ns else "No resources found"


class Printer:
    """Prints objects in the chosen format; for tables, later rows align with the first ones."""

    def __init__(self, rt: ResourceType, output: str | None, all_namespaces: bool):
        self.rt = rt
        self.output = output
        self.cols = columns_for(rt, wide=output == "wide", all_namespaces=all_namespaces and rt.namespaced)
        self.widths: list[int] | None = None
        self.printed_docs = 0
        self.header_printed = False

    def print_all(self, objs: list[dict[str, Any]], single: bool) -> None:
        if self.output in ("json", "yaml"):
            click.echo(dump(objs[0] if single else as_list(objs), self.output))
        else:
            self.print_rows(objs)

    def print_rows(self, objs: list[dict[str, Any]]) -> None:
        if self.output == "name":
            for o in objs:
                click.echo(object_name(self.rt, o))
            return
        if self.output in ("json", "yaml"):
            for o in objs:
                if self.output == "yaml" and self.printed_docs:
                    click.echo("---")
                click.echo(dump(o, self.output))
                self.printed_docs += 1
            return
        headers = [c.header for c in self.cols]
        rows = table_rows(self.cols, objs, datetime.now(UTC))
        lines, self.widths = render_table(headers, rows, self.widths)
        if self.header_printed:
            lines = lines[1:]
        self.header_printed = True
        click.echo("\n".join(lines))


@click.command("get")
@click.argument("kind")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@click.option("-l", "--selector", default=None, help="Label selector, e.g. app=web,tier!=db.")
@click.option("--field-selector", default=None, help="Field selector, e.g. spec.gatewayName=gw1.")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default=None, help="Output format.")
@click.option("-w", "--watch", is_flag=True, help="After listing, print objects as they change.")
@click.option(
    "--watch-timeout",
    type=int,
    default=None,
    metavar="SECONDS",
    help="With -w: stop after this many seconds (default: until Ctrl-C).",
)
@pass_state
def get_cmd(
    state: CliState,
    kind: str,
    names: tuple[str, ...],
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    field_selector: str | None,
    output: str | None,
    watch: bool,
    watch_timeout: int | None,
) -> None:
    """Show objects (workloads, devices, gateways, deploy, ...) as a table or -o yaml|json."""
    rt, name_list = split_kind_and_names(kind, names)
    ns = namespace_scope(rt, namespace, all_namespaces)
    printer = Printer(rt, output, all_namespaces)

    async def go(api: ApiClient) -> list[str]:
        errors: list[str] = []
        resource_version: str | None = None
        if name_list:
            objs = []
            for n in name_list:
                try:
                    objs.append(await api.get(rt, n, ns))
                except ApiError as e:
                    if not e.is_not_found or len(name_list) == 1:
                        raise
                    errors.append(format_error(e))
        else:
            listing = await api.list_all(rt, ns, label_selector=selector, field_selector=field_selector)
            objs = listing.get("items") or []
            resource_version = (listing.get("metadata") or {}).get("resourceVersion")
        if objs and watch:
            printer.print_rows(objs)
        elif objs:
            printer.print_all(objs, single=len(name_list) == 1)
        elif not name_list and not watch:
            click.echo(no_resources_message(rt, ns), err=True)
        if watch:
            await follow(
                api, rt, ns, selector, field_selector, name_list, resource_version, watch_timeout, printer
            )
        return errors

    errors = state.run(go)
    if errors:
        raise CliError("\n".join(errors))


async def follow(
    api: ApiClient,
    rt: ResourceType,
    ns: str | None,
    selector: str | None,
    field_selector: str | None,
    names: list[str],
    resource_version: str | None,
    stop_after: int | None,
    printer: Printer,
) -> None:
    fs = field_selector
    if len(names) == 1:
        fs = ",".join(x for x in (field_selector, f"metadata.name={names[0]}") if x)
    while True:
        stream = api.watch(
            rt,
            ns,
            label_selector=selector,
            field_selector=fs,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=stop_after,
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                resource_version = event.resource_version or resource_version
                if event.type == "BOOKMARK":
                    continue
                if names and event.object.get("metadata", {}).get("name") not in names:
                    continue
                printer.print_rows([event.object])
        if stop_after is not None:
            return
        # The server ended the stream (its own timeout): carry on from where we were.


COMMANDS = [get_cmd]
