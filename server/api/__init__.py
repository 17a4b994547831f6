"""The fleetlet API server: Kubernetes-shaped REST over the store (see docs/API.md)."""

from .app import create_app

__all__ = ["create_app"]
