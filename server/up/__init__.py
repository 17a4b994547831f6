"""``fleetlet up``: the server, a gateway, emulated MicroPython devices and the SBC agent on one machine."""

from .runner import UpError, UpOptions, run_up

__all__ = ["UpError", "UpOptions", "run_up"]
