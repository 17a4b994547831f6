"""Command modules. One module per command (group); each exposes ``COMMANDS: list[click.Command]``.

To add a command group (rollout, logs, gateway, agent, device, scheduler, up ...): create
``commands/<name>.py`` with ``COMMANDS = [...]`` and add its module name to ``COMMAND_MODULES``
where it should appear in ``fleetlet --help``. Use ``@pass_state`` (cli/context.py) for the
global flags and the API client, and raise ``UserError`` or let ``ApiError`` propagate: the
top-level group prints them as one line and exits 1.
"""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES: tuple[str, ...] = (
    "apply",
    "get",
    "describe",
    "logs",
    "rollout",
    "delete",
    "token",
    "server",
    "controlplane",
    "gateway",
    "agent",
    "device",
    "flash",
    "config",
    "version",
    "up",
)


def register_all(group: click.Group) -> None:
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for command in module.COMMANDS:
            group.add_command(command)
