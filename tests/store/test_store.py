"""Store semantics, run on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fleetlet.server.store import (
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    Store,
)

from .conftest import OpenStore


def dev(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Device",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"gateway": "gw1", **spec},
    }


def wl(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"runtime": "micropython", **spec},
    }


async def next_events(w: Any, n: int, limit_s: float = 10.0) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []

    async def take() -> None:
        async for item in w:
            out.append(item)
            if len(out) == n:
                return

    await asyncio.wait_for(take(), limit_s)
    return out


async def test_create_assigns_identity_and_revision(store: Store) -> None:
    a = await store.create("devices", dev("a"))
    b = await store.create("devices", dev("b"))
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert a["metadata"]["generation"] == 1
    assert int(b["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1
    assert a["metadata"]["creationTimestamp"].endswith("Z")
    assert "namespace" not in a["metadata"]
    got = await store.get("devices", "", "a")
    assert got == a
    with pytest.raises(AlreadyExists):
        await store.create("devices", dev("a"))
    with pytest.raises(NotFound):
        await store.get("devices", "", "nope")


async def test_revision_is_global_across_resources(store: Store) -> None:
    r1 = int((await store.create("devices", dev("a")))["metadata"]["resourceVersion"])
    r2 = int((await store.create("workloads", wl("w")))["metadata"]["resourceVersion"])
    r3 = int((await store.create("devices", dev("b")))["metadata"]["resourceVersion"])
    assert r1 < r2 < r3
    assert store.revision == r3


async def test_generation_bumps_on_spec_changes_only(store: Store) -> None:
    o = await store.create("devices", dev("a"))
    o["status"] = {"phase": "Online"}
    o2 = await store.update("devices", o)
    assert o2["metadata"]["generation"] == 1
    o2["metadata"]["labels"] = {"zone": "north"}
    o3 = await store.update("devices", o2)
    assert o3["metadata"]["generation"] == 1
    o3["spec"]["board"] = "esp32-wroom"
    o4 = await store.update("devices", o3)
    assert o4["metadata"]["generation"] == 2
    assert o4["status"] == {"phase": "Online"}


async def test_noop_update_writes_nothing(store: Store) -> None:
    o = await store.create("devices", dev("a"))
    rev = store.revision
    same = await store.update("devices", o)
    assert same["metadata"]["resourceVersion"] == o["metadata"]["resourceVersion"]
    assert store.revision == rev


async def test_stale_resource_version_conflicts(store: Store) -> None:
    o = await store.create("devices", dev("a"))
    fresh = await store.update("devices", {**o, "spec": {"gateway": "gw2"}})
    with pytest.raises(Conflict):
        await store.update("devices", {**o, "spec": {"gateway": "gw3"}})
    assert (await store.get("devices", "", "a"))["spec"]["gateway"] == "gw2"
    # Without a resourceVersion the update is unconditional.
    body = {**fresh, "metadata": {**fresh["metadata"], "resourceVersion": None}}
    body["spec"] = {"gateway": "gw4"}
    assert (await store.update("devices", body))["spec"]["gateway"] == "gw4"


async def test_identity_fields_cannot_be_changed(store: Store) -> None:
    o = await store.create("devices", dev("a"))
    bad = {**o, "metadata": {**o["metadata"], "uid": "forged", "creationTimestamp": "1970-01-01T00:00:00Z"}}
    out = await store.update("devices", bad)
    assert out["metadata"]["uid"] == o["metadata"]["uid"]
    assert out["metadata"]["creationTimestamp"] == o["metadata"]["creationTimestamp"]


async def test_uid_precondition(store: Store) -> None:
    await store.create("devices", dev("a"))
    with pytest.raises(Conflict):
        await store.delete("devices", "", "a", expected_uid="not-the-uid")
    await store.get("devices", "", "a")


async def test_guaranteed_update_is_atomic_under_concurrency(store: Store) -> None:
    await store.create("configmaps", {"metadata": {"name": "c", "namespace": "default"}, "data": {"n": "0"}})

    def incr(obj: dict[str, Any]) -> dict[str, Any]:
        obj["data"]["n"] = str(int(obj["data"]["n"]) + 1)
        return obj

    await asyncio.gather(*(store.guaranteed_update("configmaps", "default", "c", incr) for _ in range(200)))
    assert (await store.get("configmaps", "default", "c"))["data"]["n"] == "200"


async def test_update_fn_can_refuse(store: Store) -> None:
    await store.create("workloads", wl("w"))

    def bind(obj: dict[str, Any]) -> dict[str, Any]:
        if obj["spec"].get("deviceName"):
            raise Conflict("already bound")
        obj["spec"]["deviceName"] = "d1"
        return obj

    results = await asyncio.gather(
        *(store.guaranteed_update("workloads", "default", "w", bind) for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, dict)) == 1
    assert sum(1 for r in results if isinstance(r, Conflict)) == 4


async def test_concurrent_writes_are_group_committed(store: Store) -> None:
    results = await asyncio.gather(*(store.create("workloads", wl(f"w{i}")) for i in range(300)))
    revs = sorted(int(r["metadata"]["resourceVersion"]) for r in results)
    assert revs == list(range(revs[0], revs[0] + 300))  # unique and gap-free
    stats = store.stats()
    assert stats.writes == 300
    assert stats.commits < 300  # batched: fewer transactions than writes
    assert stats.max_batch_size > 1


async def test_batches_larger_than_one_statement_commit_whole(open_store: OpenStore) -> None:
    """Batches of 512 writes span two multi-row statements (500 rows each): creates, then
    deletes, all durable and all in the log."""
    s = await open_store()
    names = [f"w{i}" for i in range(1100)]
    await asyncio.gather(*(s.create("workloads", wl(n)) for n in names))
    assert s.stats().max_batch_size > 500
    await asyncio.gather(*(s.delete("workloads", "default", n) for n in names[:700]))
    rev = s.stats().revision
    await s.close()
    s2 = await open_store()
    left = sorted(o["metadata"]["name"] for o in (await s2.list("workloads", "default")).items)
    assert left == sorted(names[700:])
    assert s2.stats().revision == rev
    seen = await next_events(s2.watch("workloads", "default", since=rev - 700), 700)
    assert [t for t, _ in seen] == ["DELETED"] * 700


async def test_label_and_field_selectors(store: Store) -> None:
    await store.create("devices", dev("a", {"zone": "north", "tier": "x"}))
    await store.create("devices", dev("b", {"zone": "south"}))
    await store.create("devices", {**dev("c", {"zone": "north"}), "spec": {"gateway": "gw2"}})

    async def names(**kw: Any) -> list[str]:
        return [o["metadata"]["name"] for o in (await store.list("devices", **kw)).items]

    assert await names(label_selector="zone=north") == ["a", "c"]
    assert await names(label_selector="zone!=north") == ["b"]
    assert await names(label_selector="zone in (north,south),!tier") == ["b", "c"]
    assert await names(label_selector="tier") == ["a"]
    assert await names(field_selector="spec.gateway=gw2") == ["c"]
    assert await names(field_selector="spec.gateway!=gw2,metadata.name!=a") == ["b"]
    with pytest.raises(Invalid):
        await store.list("devices", label_selector="zone in north")


async def test_namespaced_list(store: Store) -> None:
    await store.create("workloads", wl("a", "ns1"))
    await store.create("workloads", wl("b", "ns2"))
    await store.create("workloads", wl("c", "ns1"))
    assert [o["metadata"]["name"] for o in (await store.list("workloads", "ns1")).items] == ["a", "c"]
    assert len((await store.list("workloads")).items) == 3


async def test_pagination_covers_everything_once(store: Store) -> None:
    await asyncio.gather(*(store.create("workloads", wl(f"w{i:03d}")) for i in range(47)))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await store.list("workloads", "default", limit=10, continue_token=token)
        pages += 1
        seen += [o["metadata"]["name"] for o in page.items]
        token = page.continue_token
        if token is None:
            break
        assert page.remaining == 47 - len(seen)
    assert pages == 5
    assert seen == sorted(f"w{i:03d}" for i in range(47))
    with pytest.raises(Invalid):
        await store.list("workloads", limit=10, continue_token="garbage!")


async def test_delete_and_finalizers(store: Store) -> None:
    o = await store.create(
        "workloads",
        {**wl("w"), "metadata": {"name": "w", "namespace": "default", "finalizers": ["fleetlet.io/gc"]}},
    )
    marked = await store.delete("workloads", "default", "w")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await store.get("workloads", "default", "w"))["metadata"]["deletionTimestamp"]
    # The deletionTimestamp cannot be cleared by an update...
    cleared = {**marked, "metadata": {**marked["metadata"], "deletionTimestamp": None}}
    cleared["metadata"].pop("resourceVersion")
    again = await store.update("workloads", cleared)
    assert again["metadata"]["deletionTimestamp"]
    # ...and removing the last finalizer completes the deletion.
    again["metadata"]["finalizers"] = []
    await store.update("workloads", again)
    with pytest.raises(NotFound):
        await store.get("workloads", "default", "w")
    assert o["metadata"]["uid"]


async def test_watch_sees_changes_in_order(store: Store) -> None:
    w = store.watch("devices")
    a = await store.create("devices", dev("a"))
    await store.update("devices", {**a, "spec": {"gateway": "gw9"}})
    await store.delete("devices", "", "a")
    events = await next_events(w, 3)
    assert [t for t, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
    revs = [e.revision for _, e in events]
    assert revs == sorted(revs)
    assert events[1][1].object["spec"]["gateway"] == "gw9"
    w.close()


async def test_watch_filters_by_resource_and_namespace(store: Store) -> None:
    w = store.watch("workloads", "ns1")
    await store.create("devices", dev("a"))
    await store.create("workloads", wl("x", "ns2"))
    await store.create("workloads", wl("y", "ns1"))
    [(t, ev)] = await next_events(w, 1)
    assert (t, ev.name) == ("ADDED", "y")
    w.close()


async def test_watch_selector_transitions(store: Store) -> None:
    w = store.watch("devices", label_selector="zone=north")
    a = await store.create("devices", dev("a", {"zone": "south"}))
    a = await store.update("devices", {**a, "metadata": {**a["metadata"], "labels": {"zone": "north"}}})
    a = await store.update("devices", {**a, "spec": {"gateway": "g2"}})
    await store.update("devices", {**a, "metadata": {**a["metadata"], "labels": {"zone": "east"}}})
    events = await next_events(w, 3)
    assert [t for t, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
    w.close()


async def test_watch_from_revision_replays_history(store: Store) -> None:
    first = await store.create("devices", dev("a"))
    start = int(first["metadata"]["resourceVersion"])
    for name in "bcd":
        await store.create("devices", dev(name))
    w = store.watch("devices", since=start)
    events = await next_events(w, 3)
    assert [e.name for _, e in events] == ["b", "c", "d"]
    w.close()


async def test_watch_history_survives_restart(open_store: OpenStore) -> None:
    s1 = await open_store()
    for i in range(5):
        await s1.create("devices", dev(f"d{i}"))
    await s1.close()
    s2 = await open_store()
    assert s2.revision == 5
    w = s2.watch("devices", since=2)  # the in-memory ring is empty: history comes from the log table
    events = await next_events(w, 3)
    assert [e.name for _, e in events] == ["d2", "d3", "d4"]
    await s2.create("devices", dev("live"))
    [(_, ev)] = await next_events(w, 1)
    assert ev.name == "live"
    w.close()


async def test_compaction_gives_gone(store: Store) -> None:
    for i in range(30):
        await store.create("devices", dev(f"d{i}"))
    await store.compact(keep=10)
    assert store.compacted_revision == 20
    with pytest.raises(Gone):
        store.watch("devices", since=5)
    w = store.watch("devices", since=25)
    events = await next_events(w, 5)
    assert [e.name for _, e in events] == [f"d{i}" for i in range(25, 30)]
    w.close()
    page = await store.list("devices", limit=5)
    assert page.continue_token
    for i in range(30):
        await store.update("devices", {**dev(f"d{i}"), "spec": {"gateway": "g3"}})
    await store.compact(keep=0)
    with pytest.raises(Gone):
        await store.list("devices", limit=5, continue_token=page.continue_token)


async def test_slow_watcher_is_cut_off_without_delaying_writers(store: Store) -> None:
    slow = store.watch("devices", buffer=5)
    fast = store.watch("devices")
    await asyncio.wait_for(
        asyncio.gather(*(store.create("devices", dev(f"d{i}")) for i in range(50))), timeout=30
    )
    got = []
    async for t, ev in slow:
        got.append((t, ev))
    assert got[-1][0] == "ERROR"
    assert '"code":410' in got[-1][1].raw
    assert store.stats().watchers_cut_off == 1
    events = await next_events(fast, 50)
    assert len(events) == 50
    fast.close()


async def test_data_survives_reopen(open_store: OpenStore) -> None:
    s1 = await open_store()
    o = await s1.create("devices", dev("a", {"k": "v"}))
    await s1.close()
    s2 = await open_store()
    assert await s2.get("devices", "", "a") == o


async def test_log_stays_bounded_under_churn(store: Store) -> None:
    await store.create("configmaps", {"metadata": {"name": "c", "namespace": "default"}, "data": {"n": "0"}})
    payload = "x" * 500

    async def churn(rounds: int) -> None:
        for r in range(rounds):
            await asyncio.gather(
                *(
                    store.guaranteed_update(
                        "configmaps",
                        "default",
                        "c",
                        lambda o, r=r, i=i: {**o, "data": {"n": f"{r}-{i}", "p": payload}},
                    )
                    for i in range(50)
                )
            )
            await store.compact(keep=200)

    await churn(40)
    size_after_first = await store.database_bytes()
    rows_after_first = await store.log_rows()
    await churn(40)
    size_after_second = await store.database_bytes()
    assert rows_after_first <= 200 + 50
    assert await store.log_rows() <= 200 + 50
    # Freed pages are reused: twice the churn must not mean twice the file.
    assert size_after_second <= size_after_first * 1.25 + 256 * 1024


async def test_a_failed_commit_loses_nothing_and_the_writer_recovers(
    open_store: OpenStore, store_url: str
) -> None:
    """A commit the database refuses answers Unavailable, changes nothing in memory, and the
    next batch commits on a fresh connection."""
    import sqlalchemy
    from fleetlet.server.store import Unavailable
    from fleetlet.server.store.sql import normalize_url

    s = await open_store()
    kept = await s.create("devices", dev("kept"))
    rev = int(kept["metadata"]["resourceVersion"])
    engine = sqlalchemy.create_engine(normalize_url(store_url))

    def rogue(sql: str) -> None:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(sql), {"r": rev + 1})

    try:
        # Another row already holds the next revision: the writer's INSERT must fail.
        insert = "INSERT INTO fleetlet_log (revision, resource, namespace, name, type, value) "
        await asyncio.to_thread(rogue, insert + "VALUES (:r, 'x', '', 'x', 'ADDED', '{}')")
        with pytest.raises(Unavailable):
            await s.create("devices", dev("refused"))
        with pytest.raises(NotFound):
            await s.get("devices", "", "refused")
        await asyncio.to_thread(rogue, "DELETE FROM fleetlet_log WHERE revision = :r")
        after = await s.create("devices", dev("after"))
        assert int(after["metadata"]["resourceVersion"]) == rev + 1
    finally:
        await asyncio.to_thread(engine.dispose)
    await s.close()
    s2 = await open_store()
    assert await s2.get("devices", "", "kept") == kept
    assert await s2.get("devices", "", "after") == after
    with pytest.raises(NotFound):
        await s2.get("devices", "", "refused")
