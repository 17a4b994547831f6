"""One clear line for every user mistake, kubectl style, and exit 1: never a traceback."""

from __future__ import annotations

from typing import IO, Any

import click

from ..client.config import ConfigError
from ..client.errors import ApiError, ConnectionFailed
from ..client.resources import UnknownResource


class CliError(click.ClickException):
    """Print ``message`` as is (no click "Error:" prefix, no usage) and exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True)


class UserError(Exception):
    """A mistake in what the user asked; printed as ``error: <message>``."""


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def format_error(exc: BaseException, config_path: str | None = None) -> str:
    if isinstance(exc, ConnectionFailed):
        return f"error: {one_line(exc.message)}"
    if isinstance(exc, ApiError):
        if exc.code == 401:
            detail = one_line(exc.message)
            if detail.lower().startswith("unauthorized: "):
                detail = detail[len("unauthorized: ") :]
            where = f" in {config_path}" if config_path else ""
            return (
                "error: You must be logged in to the server (Unauthorized): "
                f"{detail}; check --token, FLEETLET_TOKEN or the token{where}"
            )
        return f"Error from server ({exc.reason}): {one_line(exc.message)}"
    if isinstance(exc, UnknownResource | ConfigError | UserError):
        return f"error: {one_line(str(exc))}"
    return f"error: {type(exc).__name__}: {one_line(str(exc))}"


HANDLED: tuple[type[BaseException], ...] = (ApiError, UnknownResource, ConfigError, UserError)
