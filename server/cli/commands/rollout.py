"""``fleetlet rollout``: status (live progress per wave), history, undo, pause, resume.

The deployment controller publishes the wave plan in ``status.waves`` (cumulative targets),
the wave in progress in ``status.currentWave`` and the updated workloads that are available in
``status.updatedAvailableReplicas``; the bars are drawn from those.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from ...client.api import ApiClient, strip_for_write
from ...client.errors import ApiError
from ...controllers.rollout import undo_template
from ..context import CliState, pass_state
from ..errors import UserError

Obj = dict[str, Any]


def _name(ref: str) -> str:
    """Accepts ``web``, ``deployment/web`` or ``deploy/web``."""
    kind, sep, name = ref.partition("/")
    if not sep:
        return ref
    if kind.lower() not in ("deployment", "deployments", "deploy", "deployment.fleetlet.io"):
        raise UserError(f'rollout works on deployments, not "{kind}"')
    return name


def _cond(dep: Obj, ctype: str) -> Obj:
    for c in (dep.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return {}


def wave_progress(status: Obj) -> list[tuple[int, int, int]]:
    """(wave number, done, size) per wave, from the cumulative targets."""
    targets = [int(t) for t in status.get("waves") or []]
    healthy = int(status.get("updatedAvailableReplicas") or 0)
    out: list[tuple[int, int, int]] = []
    prev = 0
    for i, t in enumerate(targets, 1):
        size = max(0, t - prev)
        out.append((i, max(0, min(healthy, t) - prev), size))
        prev = t
    return out


def rollout_state(dep: Obj) -> tuple[bool, str]:
    """(finished?, one-line summary) of a Deployment's rollout."""
    meta, status = dep.get("metadata") or {}, dep.get("status") or {}
    name = meta.get("name", "")
    if status.get("observedGeneration") != meta.get("generation"):
        return False, f'Waiting for deployment "{name}" rollout to start...'
    rolled = _cond(dep, "RolledBack")
    if rolled.get("status") == "True" and status.get("currentRevision") == status.get("updateRevision"):
        return True, f'deployment "{name}" rolled back: {rolled.get("message", "")}'
    progressing = _cond(dep, "Progressing")
    if progressing.get("status") == "False":
        return True, f'deployment "{name}" rollout failed: {progressing.get("message", "")}'
    total = int(status.get("desiredReplicas") or 0)
    if (
        status.get("currentRevision") == status.get("updateRevision")
        and int(status.get("updatedAvailableReplicas") or 0) >= total
        and int(status.get("replicas") or 0) == total
    ):
        return True, f'deployment "{name}" successfully rolled out'
    if progressing.get("reason") == "DeploymentPaused":
        return False, f'deployment "{name}" is paused ({progressing.get("message", "")})'
    waves = status.get("waves") or []
    return False, (
        f'Waiting for deployment "{name}" rollout to finish:'
        f" wave {status.get('currentWave', 0)}/{len(waves)},"
        f" {status.get('updatedAvailableReplicas', 0)} of {total} updated workloads available..."
    )


@click.group("rollout")
def rollout_group() -> None:
    """Manage the rollout of a Deployment."""


@rollout_group.command("status")
@click.argument("deployment")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-w/-W", "--watch/--no-watch", default=True, help="Follow the rollout until it ends.")
@click.option(
    "--timeout", "timeout_s", type=float, default=0, help="Give up after this many seconds (0: never)."
)
@pass_state
def status_cmd(state: CliState, deployment: str, namespace: str, watch: bool, timeout_s: float) -> None:
    """Show the rollout's progress, one bar per wave."""
    name = _name(deployment)

    async def go(api: ApiClient) -> tuple[bool, str]:
        dep = await api.get("deployments", name, namespace)
        if not watch:
            return rollout_state(dep)
        return await _follow(api, name, namespace, dep, timeout_s)

    done, text = state.run(go)
    click.echo(text)
    if not done and watch:
        raise click.exceptions.Exit(1)


async def _follow(api: ApiClient, name: str, namespace: str, dep: Obj, timeout_s: float) -> tuple[bool, str]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[int, Any] = {}
        while True:
            status = dep.get("status") or {}
            current = int(status.get("currentWave") or 0)
            for wave, done, size in wave_progress(status):
                note = "in progress" if wave == current and done < size else ("done" if done >= size else "")
                if wave not in tasks:
                    tasks[wave] = progress.add_task(f"wave {wave}", total=max(size, 1), note=note)
                progress.update(tasks[wave], total=max(size, 1), completed=done if size else 1, note=note)
            finished, text = rollout_state(dep)
            if finished:
                return True, text
            if deadline is not None and time.monotonic() > deadline:
                return False, f"timed out: {text}"
            await asyncio.sleep(0.5)
            dep = await api.get("deployments", name, namespace)


@rollout_group.command("history")
@click.argument("deployment")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--revision", type=int, default=None, help="Show the template of one revision.")
@pass_state
def history_cmd(state: CliState, deployment: str, namespace: str, revision: int | None) -> None:
    """List the Deployment's revisions."""
    import json

    name = _name(deployment)
    dep = state.run(lambda api: api.get("deployments", name, namespace))
    status = dep.get("status") or {}
    history = sorted(status.get("history") or [], key=lambda h: int(h.get("revision", 0)))
    if revision is not None:
        entry = next((h for h in history if int(h.get("revision", 0)) == revision), None)
        if entry is None:
            raise UserError(f"revision {revision} not found in the history of {name}")
        click.echo(json.dumps(entry.get("template"), indent=2, sort_keys=True))
        return
    click.echo(f"deployment.fleetlet.io/{name}")
    click.echo(f"{'REVISION':<10}{'HASH':<12}{'CREATED':<30}NOTE")
    rolled_from = (status.get("rolledBack") or {}).get("from")
    for h in history:
        notes = []
        if h.get("hash") == status.get("updateRevision"):
            notes.append("current template")
        if h.get("hash") == status.get("currentRevision"):
            notes.append("stable")
        if h.get("hash") == rolled_from:
            notes.append("rolled back")
        click.echo(
            f"{h.get('revision', ''):<10}{h.get('hash', ''):<12}{h.get('created', ''):<30}{', '.join(notes)}"
        )


@rollout_group.command("undo")
@click.argument("deployment")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--to-revision", type=int, default=0, help="The revision to go back to (default: the previous one)."
)
@pass_state
def undo_cmd(state: CliState, deployment: str, namespace: str, to_revision: int) -> None:
    """Put back the template of an earlier revision."""
    name = _name(deployment)

    async def go(api: ApiClient) -> int:
        for _ in range(5):
            dep = await api.get("deployments", name, namespace)
            try:
                template, revision = undo_template(dep, to_revision or None)
            except ValueError as e:
                raise UserError(str(e)) from None
            body = strip_for_write(dep)
            body["spec"]["template"] = template
            try:
                await api.replace(body, namespace)  # resourceVersion precondition
            except ApiError as e:
                if e.is_conflict:
                    continue
                raise
            return revision
        raise UserError(f"deployment {name} keeps changing; try again")

    revision = state.run(go)
    click.echo(f"deployment.fleetlet.io/{name} rolled back to revision {revision}")


def _set_paused(state: CliState, deployment: str, namespace: str, paused: bool) -> None:
    name = _name(deployment)
    state.run(lambda api: api.patch("deployments", name, {"spec": {"paused": paused}}, namespace))
    click.echo(f"deployment.fleetlet.io/{name} {'paused' if paused else 'resumed'}")


@rollout_group.command("pause")
@click.argument("deployment")
@click.option("-n", "--namespace", default="default", show_default=True)
@pass_state
def pause_cmd(state: CliState, deployment: str, namespace: str) -> None:
    """Stop the rollout before its next wave."""
    _set_paused(state, deployment, namespace, True)


@rollout_group.command("resume")
@click.argument("deployment")
@click.option("-n", "--namespace", default="default", show_default=True)
@pass_state
def resume_cmd(state: CliState, deployment: str, namespace: str) -> None:
    """Let a paused rollout continue."""
    _set_paused(state, deployment, namespace, False)


COMMANDS = [rollout_group]
