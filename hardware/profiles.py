"""Board profiles: nominal capacity and defaults for each supported board.

A profile is one TOML file beside this module (``hardware/<name>.toml``). A Device names its
board; the server fills in arch, runtimes and default capacity/allocatable from the profile
when the device does not report its own. Figures are nominal (see each file's ``[sources]``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from .quantity import QuantityError, format_bytes, parse_bytes, parse_cpu_millis

__all__ = [
    "Allocatable",
    "BoardProfile",
    "ProfileError",
    "UnknownBoardError",
    "list_profiles",
    "load_profile",
]

_PACKAGE = "fleetlet.hardware"
KNOWN_RUNTIMES = frozenset({"docker", "micropython"})


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file and the field."""


class UnknownBoardError(LookupError):
    """No profile with that name; the message lists the known boards."""


@dataclass(frozen=True)
class Allocatable:
    """What workloads may request on this board, as quantity strings and in base units."""

    memory: str
    cpu: str
    flash: str
    memory_bytes: int
    cpu_millis: int
    flash_bytes: int

    def as_quantities(self) -> dict[str, str]:
        """The Kubernetes-shaped map for Device.status.allocatable."""
        return {"memory": self.memory, "cpu": self.cpu, "flash": self.flash}


@dataclass(frozen=True)
class BoardProfile:
    name: str
    description: str
    kind: Literal["sbc", "mcu"]
    arch: str
    platform: str
    runtimes: tuple[str, ...]
    cpu_cores: int
    cpu_millis: int
    cpu_mhz: int
    ram_bytes: int
    flash_bytes: int
    allocatable: Allocatable
    # MicroPython boards only: the typical free GC heap, and the flash filesystem size.
    heap_bytes: int | None = None
    filesystem_bytes: int | None = None
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def capacity(self) -> dict[str, str]:
        """Capacity as quantity strings: memory is the MicroPython heap on MCUs (what apps can
        actually use), physical RAM on SBCs; flash is the filesystem on MCUs."""
        memory = self.heap_bytes if self.heap_bytes is not None else self.ram_bytes
        flash = self.filesystem_bytes if self.filesystem_bytes is not None else self.flash_bytes
        return {"memory": format_bytes(memory), "cpu": f"{self.cpu_millis}m", "flash": format_bytes(flash)}


def _files() -> Any:
    return resources.files(_PACKAGE)


@cache
def list_profiles() -> tuple[str, ...]:
    """Names of all shipped board profiles, sorted."""
    return tuple(
        sorted(
            entry.name.removesuffix(".toml")
            for entry in _files().iterdir()
            if entry.name.endswith(".toml") and entry.is_file()
        )
    )


def _get(data: dict[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in data:
        raise ProfileError(f"{where}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise ProfileError(f"{where}: field {key!r} must be {typ.__name__}, got {value!r}")
    return value


def _quantity(data: dict[str, Any], key: str, where: str, *, cpu: bool = False) -> int:
    raw = _get(data, key, str, where)
    try:
        return parse_cpu_millis(raw) if cpu else parse_bytes(raw)
    except QuantityError as exc:
        raise ProfileError(f"{where}: field {key!r}: {exc}") from exc


def parse_profile(data: dict[str, Any], where: str) -> BoardProfile:
    """Validate a decoded TOML document into a :class:`BoardProfile`."""
    kind = _get(data, "kind", str, where)
    if kind not in ("sbc", "mcu"):
        raise ProfileError(f"{where}: field 'kind' must be 'sbc' or 'mcu', got {kind!r}")
    runtimes = _get(data, "runtimes", list, where)
    unknown = [r for r in runtimes if r not in KNOWN_RUNTIMES]
    if not runtimes or unknown:
        raise ProfileError(
            f"{where}: field 'runtimes' must be a non-empty subset of "
            f"{sorted(KNOWN_RUNTIMES)}, got {runtimes!r}"
        )
    alloc_table = _get(data, "allocatable", dict, where)
    alloc_where = f"{where} [allocatable]"
    allocatable = Allocatable(
        memory=_get(alloc_table, "memory", str, alloc_where),
        cpu=_get(alloc_table, "cpu", str, alloc_where),
        flash=_get(alloc_table, "flash", str, alloc_where),
        memory_bytes=_quantity(alloc_table, "memory", alloc_where),
        cpu_millis=_quantity(alloc_table, "cpu", alloc_where, cpu=True),
        flash_bytes=_quantity(alloc_table, "flash", alloc_where),
    )
    cpu_millis = _quantity(data, "cpu", where, cpu=True)
    is_mcu = kind == "mcu"
    profile = BoardProfile(
        name=_get(data, "name", str, where),
        description=_get(data, "description", str, where),
        kind=kind,
        arch=_get(data, "arch", str, where),
        platform=_get(data, "platform", str, where),
        runtimes=tuple(runtimes),
        cpu_cores=cpu_millis // 1000,
        cpu_millis=cpu_millis,
        cpu_mhz=_get(data, "cpu_mhz", int, where),
        ram_bytes=_quantity(data, "ram", where),
        flash_bytes=_quantity(data, "flash", where),
        allocatable=allocatable,
        # MCUs must state their heap and filesystem: that, not RAM, is what apps get.
        heap_bytes=_quantity(data, "heap", where) if is_mcu else None,
        filesystem_bytes=_quantity(data, "filesystem", where) if is_mcu else None,
        # Read-only: load_profile() caches and shares one instance per board.
        sources=MappingProxyType(dict(_get(data, "sources", dict, where))),
    )
    usable_memory = profile.heap_bytes if profile.heap_bytes is not None else profile.ram_bytes
    usable_flash = profile.filesystem_bytes if profile.filesystem_bytes is not None else profile.flash_bytes
    if allocatable.memory_bytes > usable_memory:
        raise ProfileError(f"{where}: allocatable memory exceeds the board's usable memory")
    if allocatable.flash_bytes > usable_flash:
        raise ProfileError(f"{where}: allocatable flash exceeds the board's storage")
    if allocatable.cpu_millis > cpu_millis:
        raise ProfileError(f"{where}: allocatable cpu exceeds the board's cpu")
    return profile


@cache
def load_profile(name: str) -> BoardProfile:
    """Load the profile for board ``name`` (e.g. ``"esp32-wroom"``).

    Raises :class:`UnknownBoardError` naming the known boards if there is none.
    """
    known = list_profiles()
    if name not in known:
        raise UnknownBoardError(f"unknown board {name!r}; known boards: {', '.join(known)}")
    filename = f"{name}.toml"
    try:
        data = tomllib.loads(_files().joinpath(filename).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"hardware/{filename}: invalid TOML: {exc}") from exc
    profile = parse_profile(data, f"hardware/{filename}")
    if profile.name != name:
        raise ProfileError(f"hardware/{filename}: field 'name' is {profile.name!r}, expected {name!r}")
    return profile
