"""``fleetlet agent``: run the SBC agent (Docker) on this device."""

from __future__ import annotations

import click


@click.command(
    "agent",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def agent_cmd(ctx: click.Context) -> None:
    """Run the SBC agent: register with the gateway, run the desired containers on the local Docker Engine.

    Options: --config FILE, --device NAME, --gateway coap://HOST:PORT, --token-file FILE,
    --docker-host URL, --data-dir DIR, --registry-mirror HOST:PORT (see `fleetlet agent --help`).
    """
    # The agent parses its own flags: it also runs as `python -m fleetlet.agent` on a device
    # without the rest of the CLI's dependencies in play.
    from fleetlet.agent.main import main

    ctx.exit(main(list(ctx.args)))


COMMANDS = [agent_cmd]
