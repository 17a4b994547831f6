"""Kubernetes ``Status`` objects: builders, and the exception that carries one to the client."""

from __future__ import annotations

import json
from typing import Any

from ..store.errors import StoreError

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def reason_for(code: int) -> str:
    return _REASONS.get(code, "Unknown")


def status_obj(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    *,
    success: bool = False,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if success else "Failure",
        "message": message,
        "reason": reason or ("" if success else reason_for(code)),
        "code": code,
    }
    if details:
        obj["details"] = details
    return obj


class ApiError(StoreError):
    """An error answered as a Status. Subclasses StoreError so that it can be raised from inside a
    store update function and reach the caller unchanged."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or reason_for(code)
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_obj(self.code, self.message, self.reason, self.details)

    def body(self) -> bytes:
        return _dumps(self.status()).encode()


def from_store_error(err: StoreError) -> ApiError:
    if isinstance(err, ApiError):
        return err
    return ApiError(err.code, str(err) or err.reason, err.reason)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, message)


def invalid(kind: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid, naming each field path as Kubernetes does."""
    text = "; ".join(c["message"] for c in causes)
    message = f'{kind}.fleetlet.io "{name}" is invalid: {text}'
    details = {"name": name, "group": "fleetlet.io", "kind": kind, "causes": causes}
    return ApiError(422, message, "Invalid", details)
