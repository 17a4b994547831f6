"""JSON on the hot paths (request bodies, stored objects, watch streams, the API client).

orjson parses and writes our objects several times faster than the stdlib; in bench/store the
stdlib's loads/dumps were about 6% of the server's CPU per create. Output is compact UTF-8,
as kube-apiserver writes. Integers beyond 64 bits parse as floats, as Go's decoder (and so
Kubernetes) reads them; writing one falls back to the stdlib, which keeps it exact.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  # a subclass of json.JSONDecodeError and ValueError


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    return orjson.loads(data)


def dumpb(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an int beyond 64 bits, a non-str key: the stdlib copes or explains
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(obj: Any) -> str:
    return dumpb(obj).decode()
