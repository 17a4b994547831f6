"""Store errors. The API maps each to a Kubernetes ``Status`` (see server/api/status.py)."""


class StoreError(Exception):
    """Base class; ``code`` and ``reason`` follow the Kubernetes Status vocabulary."""

    code = 500
    reason = "InternalError"


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    """A resourceVersion or uid precondition failed, or an atomic rule (such as binding) was broken."""

    code = 409
    reason = "Conflict"


class Gone(StoreError):
    """A watch or continue token asked for a revision older than the compaction window."""

    code = 410
    reason = "Expired"


class Invalid(StoreError):
    code = 422
    reason = "Invalid"


class Unavailable(StoreError):
    """The store is closed, or this process is not the active writer."""

    code = 503
    reason = "ServiceUnavailable"
