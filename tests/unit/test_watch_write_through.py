"""Watcher write-through: lines go straight to the consumer's sink only while nothing is queued."""

from __future__ import annotations

import asyncio

from fleetlet.server.store.watch import ADDED, MODIFIED, Watcher, WatchEvent, WatchHub


def _event(rev: int, type_: str = ADDED) -> WatchEvent:
    return WatchEvent(type_, "configmaps", "default", f"c{rev}", rev, f'{{"n":{rev}}}')


async def test_caught_up_events_are_written_through_in_order() -> None:
    hub = WatchHub(16)
    w = Watcher(hub, "configmaps", None, None, buffer=4, start_revision=0)
    hub.add(w)
    sent: list[bytes] = []
    w.sink = lambda line: sent.append(line) is None
    hub.publish([_event(1), _event(2, MODIFIED)])  # one commit: one write, lines in order
    assert sent == [b'{"type":"ADDED","object":{"n":1}}\n{"type":"MODIFIED","object":{"n":2}}\n']
    assert w.pending() == 0 and w.last_revision == 2
    hub.publish([_event(3)])
    assert sent[-1] == b'{"type":"ADDED","object":{"n":3}}\n' and w.last_revision == 3


async def test_a_commit_spanning_resources_gives_each_watcher_only_its_own() -> None:
    hub = WatchHub(16)
    cms = Watcher(hub, "configmaps", "default", None, buffer=4, start_revision=0)
    wls = Watcher(hub, "workloads", None, None, buffer=4, start_revision=0)
    got: dict[str, list[bytes]] = {"cm": [], "wl": []}
    cms.sink = lambda line: got["cm"].append(line) is None
    wls.sink = lambda line: got["wl"].append(line) is None
    hub.add(cms)
    hub.add(wls)
    other_ns = WatchEvent(ADDED, "configmaps", "kube", "x", 2, '{"n":2}')
    wl = WatchEvent(ADDED, "workloads", "default", "w", 3, '{"n":3}')
    hub.publish([_event(1), other_ns, wl, _event(4, MODIFIED)])
    assert got["cm"] == [b'{"type":"ADDED","object":{"n":1}}\n{"type":"MODIFIED","object":{"n":4}}\n']
    assert got["wl"] == [b'{"type":"ADDED","object":{"n":3}}\n']
    assert cms.last_revision == 4 and wls.last_revision == 3


async def test_refused_line_queues_and_later_events_queue_behind_it() -> None:
    hub = WatchHub(16)
    w = Watcher(hub, "configmaps", None, None, buffer=4, start_revision=0)
    hub.add(w)
    accept = False
    sent: list[bytes] = []

    def sink(line: bytes) -> bool:
        if accept:
            sent.append(line)
        return accept

    w.sink = sink
    hub.publish([_event(1)])  # the socket is full: queued
    accept = True
    hub.publish([_event(2)])  # the socket drained, but event 1 is still queued: 2 must follow it
    assert sent == []
    batch = await asyncio.wait_for(w.next_batch(), 1)
    assert [ev.revision for _, ev in batch] == [1, 2]
    hub.publish([_event(3)])  # caught up again: straight through
    assert len(sent) == 1 and w.pending() == 0


async def test_overflow_still_cuts_off_a_consumer_whose_socket_is_full() -> None:
    hub = WatchHub(16)
    w = Watcher(hub, "configmaps", None, None, buffer=2, start_revision=0)
    hub.add(w)
    w.sink = lambda line: False
    hub.publish([_event(i) for i in range(1, 5)])
    assert w.overflowed and w.sink is None and hub.cutoffs == 1
    batch = await asyncio.wait_for(w.next_batch(), 1)
    assert batch[-1][0] == "ERROR"
