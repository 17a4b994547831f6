"""``fleetlet logs``: the last lines of a workload, fetched through its gateway (kubectl logs)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from ...client.errors import REASONS, ApiError

if TYPE_CHECKING:
    from ...client.api import ApiClient

from ..context import CliState, pass_state


async def fetch_logs(
    api: ApiClient,
    namespace: str,
    workload: str,
    *,
    tail: int | None = None,
    container: str | None = None,
    timestamps: bool = False,
) -> str:
    """The text of ``GET .../workloads/<name>/log`` (text/plain, never decoded as JSON)."""
    import aiohttp

    from ...client.errors import ConnectionFailed

    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/workloads/{quote(workload, safe='')}/log"
    params: dict[str, str] = {}
    if tail is not None and tail >= 0:
        params["tailLines"] = str(tail)
    if container:
        params["container"] = container
    if timestamps:
        params["timestamps"] = "true"
    headers = {"Accept": "text/plain, application/json"}
    if api.token:
        headers["Authorization"] = f"Bearer {api.token}"
    timeout = aiohttp.ClientTimeout(total=api.timeout, sock_connect=api.connect_timeout)
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.get(api.server + path, params=params, timeout=timeout) as resp,
        ):
            raw = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        detail = (
            f"no answer within {api.timeout:g}s"
            if isinstance(e, TimeoutError)
            else str(e) or type(e).__name__
        )
        raise ConnectionFailed(api.server, detail) from e
    if status >= 400:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            raise ApiError.from_status(doc, status)
        text = raw.decode(errors="replace").strip()
        reason = REASONS.get(status, "Unknown")
        raise ApiError(
            status, reason, text.splitlines()[0][:300] if text else f"the server answered {status}"
        )
    return raw.decode("utf-8", errors="replace")


@click.command("logs")
@click.argument("workload")
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option(
    "--tail", type=int, default=-1, show_default=True, help="Lines to show; -1: all the gateway has."
)
@click.option("-c", "--container", default=None, help="Container (docker workloads with several).")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time (RFC 3339, UTC).")
@pass_state
def logs_cmd(
    state: CliState, workload: str, namespace: str | None, tail: int, container: str | None, timestamps: bool
) -> None:
    """Print the last lines a workload logged, fetched through its gateway.

    Docker workloads: a fresh tail from the SBC agent, else the lines the gateway keeps.
    MicroPython workloads: the recent lines the device pushed to its gateway.
    """
    text = state.run(
        lambda api: fetch_logs(
            api,
            namespace or "default",
            workload,
            tail=tail,
            container=container,
            timestamps=timestamps,
        )
    )
    sys.stdout.write(text)
    sys.stdout.flush()


COMMANDS = [logs_cmd]
