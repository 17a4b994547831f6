"""Deterministic CBOR on top of cbor2.

cbor2's ``canonical`` mode gives shortest integers and floats but sorts map keys
length-first (RFC 7049). RFC 8949 section 4.2.1 sorts by the encoded key bytes alone, so the
map encoder is replaced; the two orders differ only for maps that mix key types.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from .errors import WireError

# Largest payload the codec accepts or produces. Devices decode whole documents in RAM,
# and a 64 KiB-heap board cannot hold much more than this.
MAX_PAYLOAD = 16 * 1024

# Deepest nesting a v1 message needs is 6 (desired > workloads > container > probe > http-get);
# the margin keeps a hostile payload from recursing far.
MAX_DEPTH = 16


def _encode_map(encoder: cbor2.CBOREncoder, value: dict[Any, Any]) -> None:
    items = sorted(((encoder.encode_to_bytes(k), v) for k, v in value.items()), key=lambda kv: kv[0])
    encoder.encode_length(5, len(items))
    for key_bytes, item in items:
        encoder.write(key_bytes)
        encoder.encode(item)


def encode_value(value: Any, *, max_size: int | None = MAX_PAYLOAD) -> bytes:
    """Encode a plain value (dict, list, str, bytes, int, float, bool, None) deterministically."""
    try:
        data: bytes = cbor2.dumps(value, canonical=True, encoders={dict: _encode_map})
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise WireError("", f"cannot encode: {exc}") from exc
    if max_size is not None and len(data) > max_size:
        raise WireError("", f"payload of {len(data)} bytes exceeds the limit of {max_size}")
    return data


def decode_value(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int | None = MAX_PAYLOAD,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Decode one complete CBOR item. Any malformation becomes a WireError."""
    if max_size is not None and len(data) > max_size:
        raise WireError("", f"payload of {len(data)} bytes exceeds the limit of {max_size}")
    if len(data) == 0:
        raise WireError("", "empty payload")
    try:
        buf = io.BytesIO(bytes(data))
        value = cbor2.CBORDecoder(buf, max_depth=max_depth, allow_duplicate_keys=False).decode()
    except cbor2.CBORDecodeError as exc:
        raise WireError("", f"malformed CBOR: {exc}") from exc
    except Exception as exc:
        # cbor2 runs semantic decoders (dates, decimals, regexes, ...) on hostile input;
        # whatever they raise means "not a valid message", never a crash of the gateway.
        raise WireError("", f"malformed CBOR: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(data):
        # cbor2 stops after the first item; a message is exactly one item.
        raise WireError("", f"{len(data) - buf.tell()} trailing bytes after the CBOR item")
    return value
