"""Garbage collection (background, foreground, orphan, dangling owners), namespace deletion,
and the event recorder's aggregation and rate limit, against the real API."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from fleetlet.server.client import ApiError
from fleetlet.server.controllers import EventRecorder

from tests.integration.test_controllers_harness import NS, Env, controller_env, deployment, eventually

Obj = dict[str, Any]


def cm(name: str, owners: list[Obj] | None = None, finalizers: list[str] | None = None, ns: str = NS) -> Obj:
    meta: Obj = {"name": name, "namespace": ns}
    if owners:
        meta["ownerReferences"] = [
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": o["kind"],
                "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"],
                "blockOwnerDeletion": True,
            }
            for o in owners
        ]
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": "fleetlet.io/v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


async def exists(env: Env, name: str, kind: str = "configmaps", ns: str = NS) -> Obj | None:
    try:
        return await env.client.get(kind, name, ns)
    except ApiError as e:
        if e.is_not_found:
            return None
        raise


async def gone(env: Env, *names: str) -> bool:
    return all([await exists(env, n) is None for n in names])


GC_ONLY = ("garbagecollector",)


async def test_background_deletion_removes_dependents(tmp_path: Path) -> None:
    async with controller_env(tmp_path, controllers=GC_ONLY) as env:
        owner = await env.client.create(cm("owner"), NS)
        await env.client.create(cm("child-a", [owner]), NS)
        await env.client.create(cm("child-b", [owner]), NS)
        await env.client.create(cm("bystander"), NS)
        await asyncio.sleep(0.3)
        assert await exists(env, "child-a"), "a dependent of a live owner stays"
        await env.client.delete("configmaps", "owner", NS, propagation_policy="Background")
        await eventually(lambda: gone(env, "owner", "child-a", "child-b"), "dependents collected")
        assert await exists(env, "bystander")


async def test_foreground_waits_for_dependents(tmp_path: Path) -> None:
    async with controller_env(tmp_path, controllers=GC_ONLY) as env:
        owner = await env.client.create(cm("owner"), NS)
        await env.client.create(cm("child", [owner]), NS)
        held = await env.client.create(cm("held", [owner], finalizers=["test.fleetlet.io/hold"]), NS)
        await env.client.delete("configmaps", "owner", NS, propagation_policy="Foreground")

        async def child_gone_owner_waiting() -> bool:
            o = await exists(env, "owner")
            h = await exists(env, "held")
            return (
                await exists(env, "child") is None
                and o is not None
                and h is not None
                and bool(h["metadata"].get("deletionTimestamp"))
            )

        await eventually(child_gone_owner_waiting, "dependents deleted while the owner waits")
        await asyncio.sleep(0.3)
        o = await exists(env, "owner")
        assert o is not None and "foregroundDeletion" in o["metadata"]["finalizers"], (
            "the owner must stay until its last dependent is gone"
        )
        # Release the held dependent: then the owner goes too.
        h = await env.client.get("configmaps", "held", NS)
        h["metadata"]["finalizers"] = []
        await env.client.replace(h, NS)
        await eventually(lambda: gone(env, "owner", "held"), "owner gone after its dependents")
        assert held["metadata"]["uid"]


async def test_orphan_strips_owner_references(tmp_path: Path) -> None:
    async with controller_env(tmp_path, controllers=GC_ONLY) as env:
        owner = await env.client.create(cm("owner"), NS)
        other = await env.client.create(cm("other"), NS)
        await env.client.create(cm("child", [owner]), NS)
        await env.client.create(cm("shared", [owner, other]), NS)
        await env.client.delete("configmaps", "owner", NS, propagation_policy="Orphan")
        await eventually(lambda: gone(env, "owner"), "orphaning owner deleted")
        await asyncio.sleep(0.3)
        child = await env.client.get("configmaps", "child", NS)
        assert not child["metadata"].get("ownerReferences")
        shared = await env.client.get("configmaps", "shared", NS)
        assert [r["uid"] for r in shared["metadata"]["ownerReferences"]] == [other["metadata"]["uid"]]


async def test_dangling_owner_reference(tmp_path: Path) -> None:
    async with controller_env(tmp_path, controllers=GC_ONLY) as env:
        live = await env.client.create(cm("live"), NS)
        ghost = {"kind": "ConfigMap", "metadata": {"name": "ghost", "uid": str(uuid.uuid4())}}
        await env.client.create(cm("orphaned", [ghost]), NS)
        await env.client.create(cm("half", [ghost, live]), NS)
        await eventually(lambda: gone(env, "orphaned"), "dependent of a never-existing owner collected")

        async def half_fixed() -> bool:
            h = await env.client.get("configmaps", "half", NS)
            return [r["uid"] for r in h["metadata"]["ownerReferences"]] == [live["metadata"]["uid"]]

        await eventually(half_fixed, "dangling reference removed, the object kept")


async def test_deleting_a_deployment_collects_its_workloads(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.client.create(deployment("web", replicas=2), NS)
        await eventually(lambda: _count(env, 2), "2 workloads")
        await env.client.delete("deployments", "web", NS, propagation_policy="Foreground")
        await eventually(lambda: _count(env, 0), "workloads collected")
        await eventually(lambda: _no_deploy(env), "deployment gone after its workloads")


async def _count(env: Env, n: int) -> bool:
    return len(await env.workloads("web")) == n


async def _no_deploy(env: Env) -> bool:
    return await exists(env, "web", "deployments") is None


async def test_namespace_deletion_deletes_its_contents(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.client.create(
            {"apiVersion": "fleetlet.io/v1", "kind": "Namespace", "metadata": {"name": "team"}}
        )
        d = deployment("web", replicas=2)
        d["metadata"]["namespace"] = "team"
        await env.client.create(d, "team")
        await env.client.create(cm("settings", ns="team"), "team")
        await env.client.create(
            {
                "apiVersion": "fleetlet.io/v1",
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": "team"},
                "stringData": {"a": "b"},
            },
            "team",
        )
        # A foreground-deleting object inside is finished by the GC before the namespace goes.
        owner = await env.client.create(cm("owner", ns="team"), "team")
        await env.client.create(cm("child", [owner], ns="team"), "team")
        await env.client.create(cm("keep-me"), NS)

        async def team_workloads() -> int:
            return len((await env.client.list_all("workloads", "team"))["items"])

        await eventually(lambda: _eqi(team_workloads(), 2), "workloads in team")
        await env.client.delete("namespaces", "team")

        async def namespace_gone() -> bool:
            try:
                await env.client.get("namespaces", "team")
            except ApiError as e:
                return e.is_not_found
            return False

        await eventually(namespace_gone, "namespace deleted")
        for plural in ("workloads", "deployments", "configmaps", "secrets"):
            assert (await env.client.list_all(plural, "team"))["items"] == [], plural
        assert await exists(env, "keep-me"), "other namespaces are untouched"


async def _eqi(got: Any, n: int) -> bool:
    return bool(await got == n)


async def test_event_recorder_aggregates_and_rate_limits(tmp_path: Path) -> None:
    async with controller_env(tmp_path, controllers=GC_ONLY) as env:
        obj = await env.client.create(cm("subject"), NS)
        rec = EventRecorder(env.client, "test", burst=3, refill_seconds=3600)
        for _ in range(3):
            await rec.event(obj, "Warning", "Broken", "same message")
        events = await env.events("Broken", NS)
        assert len(events) == 1 and events[0]["count"] == 3, "repeats bump count, not new objects"
        assert events[0]["involvedObject"]["uid"] == obj["metadata"]["uid"]
        await rec.event(obj, "Warning", "Broken", "one too many")
        assert rec.dropped == 1
        assert len(await env.events("Broken", NS)) == 1
        await rec.event(obj, "Normal", "Other", "a different reason has its own budget")
        assert len(await env.events("Other", NS)) == 1
