"""The store: revisioned objects with watch, over SQLite (embedded) or PostgreSQL."""

from .errors import AlreadyExists, Conflict, Gone, Invalid, NotFound, StoreError, Unavailable
from .selectors import make_predicate, parse_field_selector, parse_label_selector
from .store import ListResult, Obj, RawListResult, Store, StoreStats, now_rfc3339
from .watch import ADDED, BOOKMARK, DELETED, ERROR, MODIFIED, Watcher, WatchEvent

__all__ = [
    "ADDED",
    "BOOKMARK",
    "DELETED",
    "ERROR",
    "MODIFIED",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ListResult",
    "NotFound",
    "Obj",
    "RawListResult",
    "Store",
    "StoreError",
    "StoreStats",
    "Unavailable",
    "WatchEvent",
    "Watcher",
    "make_predicate",
    "now_rfc3339",
    "parse_field_selector",
    "parse_label_selector",
]
