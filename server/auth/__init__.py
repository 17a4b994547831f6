"""Authentication (bearer tokens), authorization (RBAC roles) and the admin bootstrap."""

from .bootstrap import ensure_admin
from .rbac import RequestInfo, authorize
from .tokens import Principal, TokenIndex, generate_token, hash_token, parse_token

__all__ = [
    "Principal",
    "RequestInfo",
    "TokenIndex",
    "authorize",
    "ensure_admin",
    "generate_token",
    "hash_token",
    "parse_token",
]
