"""The gateway's table of its devices: credentials, registrations and liveness.

One small slotted record per device (no task, no dict), so 1,000 devices cost little. A single
sweep (:meth:`DeviceTable.sweep`) finds devices that went silent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


class DeviceState:
    __slots__ = (
        "credential_hash",
        "host",
        "last_seen",
        "name",
        "online",
        "registered_until",
    )

    def __init__(self, name: str, credential_hash: str) -> None:
        self.name = name
        self.credential_hash = credential_hash
        self.host: str | None = None  # address the registration came from
        self.registered_until = 0.0  # monotonic
        self.last_seen = 0.0  # monotonic; 0: never since this gateway started
        self.online = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a registration or a request was refused: a CoAP code name and a message."""

    code: str  # "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND"
    reason: str  # Event reason
    message: str


def credential_hash(token: bytes | str) -> str:
    """sha256 hex of the device credential, as stored in Device.spec.credentialHash."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()


class DeviceTable:
    def __init__(
        self,
        *,
        lifetime: int = 3600,
        offline_after: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.offline_after = offline_after
        self.clock = clock
        self._devices: dict[str, DeviceState] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[DeviceState]:
        return iter(list(self._devices.values()))

    def get(self, name: str) -> DeviceState | None:
        return self._devices.get(name)

    def upsert(self, name: str, cred_hash: str) -> bool:
        """Add or update a device; answers True if its credential changed (or it is new)."""
        d = self._devices.get(name)
        if d is None:
            self._devices[name] = DeviceState(name, cred_hash)
            return True
        if d.credential_hash != cred_hash:
            d.credential_hash = cred_hash
            d.registered_until = 0.0  # a new credential invalidates the registration
            return True
        return False

    def remove(self, name: str) -> DeviceState | None:
        return self._devices.pop(name, None)

    def online_count(self) -> int:
        return sum(1 for d in self._devices.values() if d.online)

    # ---- registration -------------------------------------------------------------------

    def register(self, name: str, token: bytes | None, host: str) -> DeviceState | Refusal:
        d = self._devices.get(name)
        if d is None:
            return Refusal("FORBIDDEN", "UnknownDevice", f"device {name!r} is not assigned to this gateway")
        if not token:
            return Refusal("UNAUTHORIZED", "MissingCredential", f"device {name!r} sent no credential")
        if not d.credential_hash:
            return Refusal(
                "UNAUTHORIZED",
                "NoCredential",
                f"device {name!r} has no spec.credentialHash; create it with `fleetlet device add`",
            )
        if not hmac.compare_digest(credential_hash(token), d.credential_hash):
            return Refusal("UNAUTHORIZED", "BadCredential", f"device {name!r} sent a wrong credential")
        d.host = host
        d.registered_until = self.clock() + self.lifetime
        return d

    def authorize(self, name: str, host: str) -> DeviceState | Refusal:
        """A request for device ``name`` from ``host``: allowed while its registration lasts.

        Until OSCORE, the registration's source address is the only proof of identity.
        """
        d = self._devices.get(name)
        if d is None:
            return Refusal("NOT_FOUND", "UnknownDevice", f"no device {name!r} on this gateway")
        if d.host is None or d.registered_until < self.clock():
            return Refusal("UNAUTHORIZED", "NotRegistered", "not registered (or expired): POST /rd?ep= first")
        if d.host != host:
            return Refusal("FORBIDDEN", "WrongAddress", "registered from another address: register again")
        return d

    # ---- liveness -----------------------------------------------------------------------

    def seen(self, d: DeviceState) -> bool:
        """Mark ``d`` alive now; answers True if it just came Online."""
        d.last_seen = self.clock()
        if d.online:
            return False
        d.online = True
        return True

    def sweep(self) -> list[DeviceState]:
        """Devices silent for ``offline_after``: marked offline and returned (once each)."""
        limit = self.clock() - self.offline_after
        gone = [d for d in self._devices.values() if d.online and d.last_seen < limit]
        for d in gone:
            d.online = False
        return gone
