"""``fleetlet``: the entry point (console script ``fleetlet.server.cli.main:main``)."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from .commands import register_all
from .context import CliState, setup_logging
from .errors import HANDLED, CliError, format_error


class FleetletGroup(click.Group):
    """Keeps commands in registration order and turns known failures into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except HANDLED as e:
            raise CliError(format_error(e, _config_path(ctx))) from None
        except Exception as e:
            state = ctx.find_object(CliState)
            if state is not None and state.verbose:
                traceback.print_exc()
            raise CliError(format_error(e) + " (run with -v for details)") from None


def _config_path(ctx: click.Context) -> str | None:
    state = ctx.find_object(CliState)
    if state is not None and state._config is not None:
        return str(state._config.config_path)
    return None


@click.group(cls=FleetletGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", "-s", metavar="URL", help="API server URL (env FLEETLET_SERVER).")
@click.option("--token", metavar="TOKEN", help="Bearer token (env FLEETLET_TOKEN).")
@click.option("-v", "--verbose", count=True, help="Log requests (-v) and details (-vv) to stderr.")
@click.version_option(package_name="fleetlet", prog_name="fleetlet", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, server: str | None, token: str | None, verbose: int) -> None:
    """fleetlet controls fleets of edge devices, the way kubectl controls a Kubernetes cluster."""
    ctx.obj = CliState(server=server, token=token, verbose=verbose)
    setup_logging(verbose)


register_all(cli)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="fleetlet")


if __name__ == "__main__":
    main()
