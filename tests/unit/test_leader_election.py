"""Lease-based leader election, against an in-memory stand-in for the API's lease endpoints.

The stand-in implements exactly the semantics the elector relies on (get, create with 409
AlreadyExists, replace with a resourceVersion precondition and 409 Conflict), so races can be
staged deterministically; tests/integration/test_scheduler_api.py runs it against the real API.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
from fleetlet.server.client import ApiError
from fleetlet.server.leaderelection import LeaderElector

Obj = dict[str, Any]


class FakeLeaseApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}
        self.namespaces: set[str] = set()
        self.revision = 0
        self.down = False  # every call fails like an unreachable server
        self.writes: list[tuple[str, str]] = []  # (holder written, resourceVersion)

    def _check(self) -> None:
        if self.down:
            raise ApiError(503, "ServiceUnavailable", "down")

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        await asyncio.sleep(0)
        self._check()
        obj = self.objects.get((namespace or "", name))
        if obj is None:
            raise ApiError(404, "NotFound", f'leases "{name}" not found')
        return copy.deepcopy(obj)

    async def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        await asyncio.sleep(0)
        self._check()
        if obj["kind"] == "Namespace":
            self.namespaces.add(obj["metadata"]["name"])
            return obj
        ns = namespace or obj["metadata"].get("namespace", "")
        if ns not in self.namespaces:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
        key = (ns, obj["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "already exists")
        return self._store(key, obj)

    async def replace(self, obj: Obj, namespace: str | None = None) -> Obj:
        await asyncio.sleep(0)
        self._check()
        key = (namespace or "", obj["metadata"]["name"])
        cur = self.objects.get(key)
        if cur is None:
            raise ApiError(404, "NotFound", "not found")
        rv = obj["metadata"].get("resourceVersion")
        if rv is not None and rv != cur["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        return self._store(key, obj)

    def _store(self, key: tuple[str, str], obj: Obj) -> Obj:
        self.revision += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        self.objects[key] = stored
        self.writes.append((stored["spec"].get("holderIdentity", ""), str(self.revision)))
        return copy.deepcopy(stored)

    def holder(self) -> str:
        lease = self.objects.get(("fleetlet-system", "sched"))
        return "" if lease is None else str(lease["spec"].get("holderIdentity", ""))


def elector(api: FakeLeaseApi, identity: str, **kw: Any) -> LeaderElector:
    kw.setdefault("lease_duration", 0.6)
    return LeaderElector(api, name="sched", identity=identity, **kw)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``check`` (a deadline for a hung test, not a timing assertion)."""
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - the conditions are plain attributes, no event to wait on
            await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_acquire_renew_release() -> None:
    api = FakeLeaseApi()
    calls: list[str] = []
    e = elector(
        api,
        "a",
        on_started_leading=lambda: calls.append("start"),
        on_stopped_leading=lambda: calls.append("stop"),
    )
    task = asyncio.create_task(e.run())
    await until(lambda: e.is_leader)
    assert api.holder() == "a" and "fleetlet-system" in api.namespaces
    first_rv = api.objects[("fleetlet-system", "sched")]["metadata"]["resourceVersion"]
    await until(lambda: api.objects[("fleetlet-system", "sched")]["metadata"]["resourceVersion"] != first_rv)
    assert e.is_leader and api.holder() == "a"  # renewed, still ours
    await stop(task)
    assert calls == ["start", "stop"]
    assert api.holder() == ""  # released on exit
    assert not e.is_leader


async def test_only_one_leader_and_successor_takes_over_after_release() -> None:
    api = FakeLeaseApi()
    a, b = elector(api, "a"), elector(api, "b")
    ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
    try:
        await until(lambda: a.is_leader or b.is_leader)
        both = False
        for _ in range(100):
            both = both or (a.is_leader and b.is_leader)
            await asyncio.sleep(0.01)
        assert not both
        follower, leader_task = (b, ta) if a.is_leader else (a, tb)
        await stop(leader_task)
        await until(lambda: follower.is_leader)
        assert api.holder() == follower.identity
        lease = api.objects[("fleetlet-system", "sched")]
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        await stop(ta)
        await stop(tb)


async def test_dead_holder_is_replaced_only_after_lease_duration_without_renewal() -> None:
    api = FakeLeaseApi()
    a = elector(api, "a", release_on_cancel=False)
    ta = asyncio.create_task(a.run())
    await until(lambda: a.is_leader)
    b = elector(api, "b")
    tb = asyncio.create_task(b.run())
    try:
        # While "a" renews, "b" never takes over.
        for _ in range(60):
            assert not b.is_leader
            await asyncio.sleep(0.01)
        await stop(ta)  # dies without releasing
        assert api.holder() == "a"
        await until(lambda: b.is_leader)
        assert api.holder() == "b"
    finally:
        await stop(tb)


async def test_leader_that_cannot_renew_steps_down() -> None:
    api = FakeLeaseApi()
    stopped = asyncio.Event()
    e = elector(api, "a", on_stopped_leading=stopped.set)
    task = asyncio.create_task(e.run())
    try:
        await until(lambda: e.is_leader)
        api.down = True
        async with asyncio.timeout(10):
            await stopped.wait()
        assert not e.is_leader
        api.down = False
        await until(lambda: e.is_leader)  # and comes back once the API does
    finally:
        await stop(task)


async def test_racing_candidates_on_an_expired_lease_one_wins() -> None:
    api = FakeLeaseApi()
    api.namespaces.add("fleetlet-system")
    await api.create(
        {
            "kind": "Lease",
            "metadata": {"name": "sched"},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 3},
        },
        "fleetlet-system",
    )
    a, b = elector(api, "a"), elector(api, "b")
    # Both read the same released record, then both write: the second write is stale -> 409.
    results = await asyncio.gather(a._try_acquire_or_renew(), b._try_acquire_or_renew())
    assert sorted(results) == [False, True]
    winner = "a" if results[0] else "b"
    assert api.holder() == winner
    assert api.objects[("fleetlet-system", "sched")]["spec"]["leaseTransitions"] == 4


def test_rejects_inconsistent_timing() -> None:
    with pytest.raises(ValueError):
        LeaderElector(FakeLeaseApi(), name="x", lease_duration=1.0, renew_deadline=2.0)  # type: ignore[arg-type]
