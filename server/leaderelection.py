"""Lease-based leader election through the API, the way client-go's leaderelection works.

Candidates share one Lease (``leases/<namespace>/<name>``). The holder renews it every
``retry_period`` (``lease_duration / 3`` by default). Another candidate takes it over only
when it is released (empty ``holderIdentity``) or when it has not seen the record change for
a whole ``lease_duration`` on its *own* clock, so clock skew between machines does not matter.
Every write carries the ``resourceVersion`` it read: of two candidates racing for the same
record, one gets 409 Conflict and loses.

A leader that cannot renew within ``renew_deadline`` stops leading on its own before anyone
else can take over (``renew_deadline < lease_duration``), and ``on_stopped_leading`` runs at
once, so at most one candidate acts as leader at any time (given bounded clock *rate* drift).
Leaving ``run()`` (cancellation) releases the lease so a successor need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fleetlet.server.client import ApiClient, ApiError

log = logging.getLogger("fleetlet.leaderelection")

Callback = Callable[[], Awaitable[None] | None]
Obj = dict[str, Any]

DEFAULT_LEASE_NAMESPACE = "fleetlet-system"


def now_micro() -> str:
    """RFC 3339 with microseconds (Kubernetes' MicroTime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        client: ApiClient,
        *,
        name: str,
        namespace: str = DEFAULT_LEASE_NAMESPACE,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float | None = None,
        retry_period: float | None = None,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        release_on_cancel: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.retry_period = retry_period if retry_period is not None else lease_duration / 3
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.release_on_cancel = release_on_cancel
        self._clock = clock
        self._observed: Obj | None = None  # the last Lease we read or wrote
        self._observed_spec: Obj | None = None
        self._observed_at = 0.0  # our clock when that record last changed
        self._leading = False
        self._last_renew = 0.0
        self.transitions = 0  # how many times this candidate became leader
        self._leading_changed = asyncio.Event()

    # -- state ----------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True while we hold a lease renewed within the renew deadline."""
        return self._leading and self._clock() - self._last_renew < self.renew_deadline

    @property
    def holder(self) -> str:
        spec = self._observed_spec or {}
        return str(spec.get("holderIdentity") or "")

    async def wait_leading(self) -> None:
        while not self._leading:
            self._leading_changed.clear()
            await self._leading_changed.wait()

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Campaign, lead, and campaign again after losing; returns only by cancellation."""
        try:
            while True:
                if await self._try_acquire_or_renew():
                    if not self._leading:
                        await self._set_leading(True)
                elif self._leading and self._clock() - self._last_renew >= self.renew_deadline:
                    await self._set_leading(False)
                await asyncio.sleep(self._next_delay())
        finally:
            was_leading = self._leading
            if was_leading:
                self._leading = False
                self._leading_changed.set()
                with contextlib.suppress(Exception):
                    await self._call(self.on_stopped_leading)
                if self.release_on_cancel:
                    await self._release()

    def _next_delay(self) -> float:
        if self._leading:
            # Renew often enough that a failed try or two still land inside the deadline.
            left = self.renew_deadline - (self._clock() - self._last_renew)
            return max(min(self.retry_period, left), 0.01)
        return self.retry_period

    async def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        self._leading_changed.set()
        if leading:
            self.transitions += 1
            log.info("%s: became leader of %s/%s", self.identity, self.namespace, self.name)
            await self._call(self.on_started_leading)
        else:
            log.warning("%s: lost leadership of %s/%s", self.identity, self.namespace, self.name)
            await self._call(self.on_stopped_leading)

    async def _call(self, cb: Callback | None) -> None:
        if cb is None:
            return
        result = cb()
        if inspect.isawaitable(result):
            await result

    # -- one attempt --------------------------------------------------------------------------
    def _observe(self, lease: Obj) -> None:
        spec = lease.get("spec") or {}
        if self._observed_spec != spec:
            self._observed_at = self._clock()
        self._observed = lease
        self._observed_spec = dict(spec)

    def _spec(self, *, acquire: bool, transitions: int) -> Obj:
        now = now_micro()
        old = self._observed_spec or {}
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(round(self.lease_duration), 1),
            "acquireTime": now if acquire else old.get("acquireTime", now),
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _try_acquire_or_renew(self) -> bool:
        started = self._clock()
        timeout = (
            self.renew_deadline
            if not self._leading
            else max(self.renew_deadline - (started - self._last_renew), 0.01)
        )
        try:
            async with asyncio.timeout(timeout):
                ok = await self._attempt()
        except TimeoutError:
            log.warning("%s: lease %s/%s: request timed out", self.identity, self.namespace, self.name)
            return False
        except ApiError as e:
            if e.is_conflict:
                log.info("%s: lease %s/%s: lost a race (409)", self.identity, self.namespace, self.name)
            else:
                log.warning("%s: lease %s/%s: %s", self.identity, self.namespace, self.name, e)
            return False
        if ok:
            self._last_renew = started
        return ok

    async def _attempt(self) -> bool:
        try:
            lease = await self.client.get("leases", self.name, self.namespace)
        except ApiError as e:
            if not e.is_not_found:
                raise
            return await self._create()
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            return await self._write(lease, self._spec(acquire=not self._leading, transitions=transitions))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = not holder or self._clock() - self._observed_at >= duration
        if not expired:
            if self._leading:
                # Someone else holds it now: we lost it.
                await self._set_leading(False)
            return False
        return await self._write(lease, self._spec(acquire=True, transitions=transitions + 1))

    async def _write(self, lease: Obj, spec: Obj) -> bool:
        body = {
            "apiVersion": lease.get("apiVersion", "fleetlet.io/v1"),
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
            },
            "spec": spec,
        }
        written = await self.client.replace(body, self.namespace)
        self._observe(written)
        return True

    async def _create(self) -> bool:
        body = {
            "apiVersion": "fleetlet.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(acquire=True, transitions=0),
        }
        try:
            created = await self.client.create(body, self.namespace)
        except ApiError as e:
            if e.is_not_found:
                # The lease namespace does not exist yet: make it, then try again next round.
                await self._ensure_namespace()
                return False
            raise
        self._observe(created)
        return True

    async def _ensure_namespace(self) -> None:
        ns = {"apiVersion": "fleetlet.io/v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        try:
            await self.client.create(ns)
        except ApiError as e:
            if e.code != 409:
                raise

    async def _release(self) -> None:
        """Give the lease up (empty holder) so a successor need not wait for it to expire."""
        lease = self._observed
        if lease is None or self.holder != self.identity:
            return
        spec = dict(self._observed_spec or {})
        spec["holderIdentity"] = ""
        spec["leaseDurationSeconds"] = 1
        spec["renewTime"] = now_micro()
        try:
            async with asyncio.timeout(2.0):
                await self._write(lease, spec)
            log.info("%s: released lease %s/%s", self.identity, self.namespace, self.name)
        except (ApiError, TimeoutError) as e:
            log.warning("%s: could not release lease %s/%s: %s", self.identity, self.namespace, self.name, e)
