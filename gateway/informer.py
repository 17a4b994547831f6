"""The gateway's informers: ``fleetlet.server.client.informer.Informer`` on the gateway's own API
client (gateway/apiclient.py, which keeps aiohttp out of the process), with a ``slim`` transform
(client-go's ``SetTransform``) that shrinks what the cache keeps of each object. The handlers
still get the whole object; the cache only has to answer what the gateway asks it later (an
object's status, its resourceVersion, which objects exist), so with 1,000 devices it holds a few
hundred bytes per object instead of the whole document.
"""

from __future__ import annotations

import sys
from typing import Any

from fleetlet.server.client.informer import Backoff, Informer, object_key

Obj = dict[str, Any]

__all__ = ["Backoff", "Informer", "compact", "object_key", "slim_object"]


def slim_object(obj: Obj, *, status: bool = True) -> Obj:
    """What the gateway's caches keep of an object: identity, resourceVersion, the spec fields
    that route it to a device, and (unless ``status=False``) its status, compacted (:func:`compact`)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    out: Obj = {
        "metadata": {
            k: compact(meta[k]) for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        },
    }
    routing = {k: compact(spec[k]) for k in ("deviceName", "gatewayName", "gateway") if k in spec}
    if routing:
        out["spec"] = routing
    if status and "status" in obj:
        out["status"] = compact(obj["status"])
    return out


def compact(value: Any) -> Any:
    """A copy of decoded JSON whose keys and short strings are interned: 1,000 statuses repeat
    the same few dozen keys and values ("conditions", "type", "Ready", "True", a timestamp...),
    and a JSON decoder makes new string objects for every document."""
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= 64 and type(value) is str else value
    if isinstance(value, dict):
        return {(sys.intern(k) if type(k) is str else k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value
