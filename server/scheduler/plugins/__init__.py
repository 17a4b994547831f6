"""The default filter and score plugins, and the framework built from them."""

from __future__ import annotations

import random

from ..framework import FilterPlugin, Framework, WeightedScore
from .arch import ArchitectureMatches
from .least_allocated import LeastAllocated
from .node_selector import NodeSelectorMatches
from .readiness import DeviceReady
from .resources import ResourcesFit
from .runtime import RuntimeSupported
from .spread import GatewaySpread, ZoneSpread
from .taints import TaintToleration

__all__ = [
    "ArchitectureMatches",
    "DeviceReady",
    "GatewaySpread",
    "LeastAllocated",
    "NodeSelectorMatches",
    "ResourcesFit",
    "RuntimeSupported",
    "TaintToleration",
    "ZoneSpread",
    "default_filters",
    "default_framework",
    "default_scores",
]


def default_filters() -> list[FilterPlugin]:
    """Cheap, most selective checks first: a device is dropped at its first failing filter."""
    return [
        DeviceReady(),
        RuntimeSupported(),
        ArchitectureMatches(),
        NodeSelectorMatches(),
        TaintToleration(),
        ResourcesFit(),
    ]


def default_scores() -> list[WeightedScore]:
    return [
        WeightedScore(LeastAllocated(), 1.0),
        WeightedScore(GatewaySpread(), 2.0),
        WeightedScore(ZoneSpread(), 1.0),
        WeightedScore(TaintToleration(), 3.0),
    ]


def default_framework(
    *,
    percentage_of_devices_to_score: int | None = None,
    rng: random.Random | None = None,
) -> Framework:
    return Framework(
        default_filters(),
        default_scores(),
        percentage_of_devices_to_score=percentage_of_devices_to_score,
        rng=rng,
    )
