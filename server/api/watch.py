"""Watch streams: newline-delimited JSON events over a chunked response (docs/API.md, "watch")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from aiohttp import web

from ..store import ERROR, Watcher
from ..store.errors import Gone, Invalid
from ..store.watch import bookmark_event, error_event
from .resources import API_VERSION, Kind
from .state import ApiState
from .status import bad_request

log = logging.getLogger("fleetlet.api.watch")

# Wake at least this often while idle, to notice clients that went away.
IDLE_CHECK_SECONDS = 5.0
# Flush the synthetic ADDED events in chunks of about this many bytes.
CHUNK_BYTES = 64 * 1024
# Past this much unsent data a client counts as slow: events queue (bounded) instead of being
# written through, and the coroutine's writes wait for the socket to drain.
WRITE_THROUGH_LIMIT = 64 * 1024


def _params(request: web.Request, min_request_timeout: float) -> tuple[int | None, float | None, bool]:
    rv_text = request.query.get("resourceVersion", "")
    since: int | None = None
    if rv_text not in ("", "0"):
        try:
            since = int(rv_text)
        except ValueError:
            raise bad_request(f"resourceVersion: invalid value {rv_text!r}: must be an integer") from None
    timeout: float | None = None
    t_text = request.query.get("timeoutSeconds")
    if t_text:
        try:
            timeout = float(t_text)
        except ValueError:
            raise bad_request(f"timeoutSeconds: invalid value {t_text!r}") from None
    elif min_request_timeout > 0:
        # As kube-apiserver (--min-request-timeout): a watch without timeoutSeconds ends after
        # a random 1-2x the minimum. Clients resume from their last resourceVersion; authorization
        # is checked again then (a gateway's watch of a Secret no workload references any more
        # must not live forever), and long-lived streams spread over time instead of piling up.
        timeout = min_request_timeout * (1.0 + random.random())
    bookmarks = request.query.get("allowWatchBookmarks", "").lower() in ("1", "true", "yes")
    return since, timeout, bookmarks


async def _start(resp: web.StreamResponse, request: web.Request) -> None:
    resp.content_type = "application/json"
    resp.enable_chunked_encoding()
    await resp.prepare(request)


async def serve_watch(
    api: ApiState, request: web.Request, kind: Kind, namespace: str | None
) -> web.StreamResponse:
    since, timeout, bookmarks = _params(request, api.min_request_timeout)
    label_selector = request.query.get("labelSelector")
    field_selector = request.query.get("fieldSelector")
    initial: list[str] = []
    try:
        if since is None:
            # List and subscribe with no await in between: the watch starts exactly at the list's revision.
            listed = await api.store.list_raw(
                kind.plural, namespace, label_selector=label_selector, field_selector=field_selector
            )
            initial = listed.items
            watcher = api.store.watch(
                kind.plural,
                namespace,
                since=listed.resource_version,
                label_selector=label_selector,
                field_selector=field_selector,
            )
        else:
            watcher = api.store.watch(
                kind.plural,
                namespace,
                since=since,
                label_selector=label_selector,
                field_selector=field_selector,
            )
    except Invalid as e:
        raise bad_request(str(e)) from None
    except Gone as e:
        # As kube-apiserver does: the stream opens, carries one ERROR (410 Expired), and ends.
        resp = web.StreamResponse()
        await _start(resp, request)
        await resp.write(error_event(410, "Expired", str(e)).line())
        await resp.write_eof()
        log.info("watch %s from %s: %s", kind.plural, since, e)
        return resp

    resp = web.StreamResponse()
    api.watchers.add(watcher)
    gauge = api.metrics.watchers.labels(kind.plural)
    gauge.inc()
    try:
        await _start(resp, request)
        buf: list[bytes] = []
        size = 0
        for raw in initial:
            line = b'{"type":"ADDED","object":%s}\n' % raw.encode()
            buf.append(line)
            size += len(line)
            if size >= CHUNK_BYTES:
                await resp.write(b"".join(buf))
                buf, size = [], 0
        if buf:
            await resp.write(b"".join(buf))
        await _stream(api, resp, request, watcher, kind, timeout, bookmarks)
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away (or the server is stopping): nothing to tell anyone
    finally:
        watcher.close()
        api.watchers.discard(watcher)
        gauge.dec()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write_eof()
    return resp


def _bookmark_revision(api: ApiState, watcher: Watcher) -> int:
    """The revision this client is known to be current to. With nothing queued (and any history
    already read), that is the store's revision: events are queued the moment they commit."""
    history_unread = getattr(watcher, "_history", None) is not None
    if watcher.pending() or history_unread:
        return watcher.last_revision
    return max(api.store.revision, watcher.last_revision)


async def _stream(
    api: ApiState,
    resp: web.StreamResponse,
    request: web.Request,
    watcher: Watcher,
    kind: Kind,
    timeout_s: float | None,
    bookmarks: bool,
) -> None:
    """Send events as they come. One await per wake-up (not per event, not per timer): with
    1,000 watchers each event costs a queue wake-up and a transport write per watcher."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s if timeout_s else None
    next_bookmark = loop.time() + api.bookmark_interval if bookmarks else None
    timer: asyncio.TimerHandle | None = None

    def arm() -> None:
        nonlocal timer
        now = loop.time()
        wait = IDLE_CHECK_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - now)
        if next_bookmark is not None:
            wait = min(wait, next_bookmark - now)
        timer = loop.call_at(now + max(wait, 0.0), on_timer)

    def on_timer() -> None:
        watcher.poke()
        arm()

    def write_through(line: bytes) -> bool:
        """One chunk of the chunked response, straight to the socket (see Watcher.offer)."""
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > WRITE_THROUGH_LIMIT:
            return False
        transport.write(b"%x\r\n%s\r\n" % (len(line), line))
        return True

    arm()
    watcher.sink = write_through
    try:
        while True:
            try:
                batch = await watcher.next_batch()
            except StopAsyncIteration:
                return
            if batch:
                ended = False
                lines = []
                for etype, ev in batch:
                    lines.append(ev.line(etype))
                    if etype == ERROR:
                        ended = True
                        break
                await resp.write(lines[0] if len(lines) == 1 else b"".join(lines))
                if ended:
                    return
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if next_bookmark is not None and now >= next_bookmark:
                rv = _bookmark_revision(api, watcher)
                await resp.write(bookmark_event(kind.kind, API_VERSION, rv).line())
                next_bookmark = now + api.bookmark_interval
            if not batch:
                transport = request.transport
                if transport is None or transport.is_closing() or api.shutting_down:
                    return
    finally:
        watcher.sink = None
        if timer is not None:
            timer.cancel()


__all__ = ["serve_watch"]
