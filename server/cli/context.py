"""Per-invocation state shared by every command: global flags, config, and the API client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import click

from ..client.config import ClientConfig

if TYPE_CHECKING:
    from ..client.api import ApiClient

T = TypeVar("T")


@dataclass
class CliState:
    server: str | None = None
    token: str | None = None
    verbose: int = 0
    _config: ClientConfig | None = field(default=None, repr=False)

    def config(self) -> ClientConfig:
        if self._config is None:
            self._config = ClientConfig.load(server=self.server, token=self.token)
        return self._config

    def make_client(self) -> ApiClient:
        # Imported here so `fleetlet --help` and `fleetlet server` don't pay for aiohttp twice.
        from ..client.api import ApiClient

        return ApiClient.from_config(self.config())

    def run(self, fn: Callable[[ApiClient], Awaitable[T]]) -> T:
        """Run ``fn(client)`` on a fresh event loop; Ctrl-C exits quietly with 130."""

        async def go() -> T:
            async with self.make_client() as api:
                return await fn(api)

        try:
            return asyncio.run(go())
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


pass_state = click.make_pass_decorator(CliState, ensure=True)


def setup_logging(verbose: int) -> None:
    if verbose <= 0:
        return
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # -v shows what the client asks of the server.
    logging.getLogger("fleetlet.server.client").setLevel(logging.DEBUG)
