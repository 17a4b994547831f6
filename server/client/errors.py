"""Client-side errors. Every failure the client surfaces is an :class:`ApiError`."""

from __future__ import annotations

from typing import Any

# Reason names for HTTP codes, for servers (or proxies) that answer without a Status body.
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A non-2xx answer carrying (or synthesised as) a Kubernetes ``Status``."""

    def __init__(self, code: int, reason: str, message: str, status_obj: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.status_obj: dict[str, Any] = (
            status_obj if status_obj is not None else make_status(code, reason, message)
        )

    @classmethod
    def from_status(cls, status: dict[str, Any], http_code: int | None = None) -> ApiError:
        code = status.get("code")
        if not isinstance(code, int) or code == 0:
            code = http_code or 500
        reason = status.get("reason") or REASONS.get(code, "Unknown")
        message = status.get("message") or reason
        return cls(code, str(reason), str(message), status)

    def __str__(self) -> str:
        return f"{self.reason} ({self.code}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, reason={self.reason!r}, message={self.message!r})"

    @property
    def is_not_found(self) -> bool:
        return self.code == 404

    @property
    def is_conflict(self) -> bool:
        return self.code == 409

    @property
    def is_gone(self) -> bool:
        return self.code == 410


class ConnectionFailed(ApiError):
    """The server could not be reached at all (refused, DNS, timeout, reset)."""

    def __init__(self, server: str, detail: str):
        message = f"cannot reach the fleetlet server at {server}: {detail}; is `fleetlet server` running?"
        super().__init__(0, "ConnectionFailed", message)
        self.server = server
        self.detail = detail

    def __str__(self) -> str:
        return self.message


def make_status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
