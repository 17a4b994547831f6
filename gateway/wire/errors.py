"""The one exception the wire codec raises."""

from __future__ import annotations


class WireError(ValueError):
    """A payload that is not a valid fleetlet wire message.

    ``path`` names the offending field (``report.workloads[2].state``) so the gateway can
    log it and answer 4.00 Bad Request with a message an operator can act on.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem
