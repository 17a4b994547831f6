"""Board profiles load and are consistent; Kubernetes quantities parse like Kubernetes does."""

from __future__ import annotations

import dataclasses

import pytest
from fleetlet.hardware.profiles import (
    BoardProfile,
    ProfileError,
    UnknownBoardError,
    list_profiles,
    load_profile,
    parse_profile,
)
from fleetlet.hardware.quantity import (
    QuantityError,
    format_bytes,
    parse_bytes,
    parse_cpu_millis,
    parse_quantity,
)

EXPECTED_BOARDS = {
    "raspberry-pi-4",
    "raspberry-pi-zero-2w",
    "esp32-wroom",
    "esp32-s3",
    "rp2040-pico-w",
    "esp8266",
}


def test_all_expected_boards_are_listed() -> None:
    assert EXPECTED_BOARDS <= set(list_profiles())


@pytest.mark.parametrize("name", sorted(EXPECTED_BOARDS))
def test_every_profile_loads_consistently(name: str) -> None:
    p = load_profile(name)
    assert isinstance(p, BoardProfile)
    assert p.name == name
    assert p.description
    assert p.cpu_millis >= 1000 and p.cpu_mhz > 0
    assert 0 < p.allocatable.cpu_millis <= p.cpu_millis
    assert 0 < p.allocatable.memory_bytes <= p.ram_bytes
    assert 0 < p.allocatable.flash_bytes <= p.flash_bytes
    # Every figure cites where it came from.
    for key in ("cpu", "ram", "flash", "allocatable"):
        assert p.sources.get(key), f"{name}: no source for {key}"
    if p.kind == "sbc":
        assert p.runtimes == ("docker",)
        assert p.platform.startswith("linux/")
        assert p.heap_bytes is None
    else:
        assert p.runtimes == ("micropython",)
        assert p.heap_bytes is not None and p.filesystem_bytes is not None
        assert p.allocatable.memory_bytes <= p.heap_bytes <= p.ram_bytes
        assert p.allocatable.flash_bytes <= p.filesystem_bytes <= p.flash_bytes
        assert p.sources.get("heap")


def test_profile_figures() -> None:
    pi4 = load_profile("raspberry-pi-4")
    assert (pi4.arch, pi4.ram_bytes, pi4.cpu_cores) == ("arm64", 4 * 2**30, 4)
    assert pi4.allocatable.as_quantities() == {"memory": "3Gi", "cpu": "3500m", "flash": "24Gi"}
    pico = load_profile("rp2040-pico-w")
    assert (pico.arch, pico.ram_bytes, pico.flash_bytes) == ("armv6m", 264 * 1024, 2 * 2**20)
    assert load_profile("esp32-wroom").capacity() == {"memory": "110Ki", "cpu": "2000m", "flash": "2Mi"}


def test_profiles_are_frozen_and_cached() -> None:
    p = load_profile("esp8266")
    assert load_profile("esp8266") is p
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.sources["cpu"] = "x"  # type: ignore[index]


def test_unknown_board_gives_clear_error() -> None:
    with pytest.raises(UnknownBoardError) as err:
        load_profile("arduino-uno")
    message = str(err.value)
    assert "arduino-uno" in message and "esp32-wroom" in message


def _minimal(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "name": "x",
        "description": "d",
        "kind": "mcu",
        "arch": "armv6m",
        "platform": "micropython/rp2",
        "runtimes": ["micropython"],
        "cpu": "1",
        "cpu_mhz": 100,
        "ram": "256Ki",
        "heap": "128Ki",
        "flash": "2Mi",
        "filesystem": "1Mi",
        "allocatable": {"memory": "64Ki", "cpu": "1000m", "flash": "512Ki"},
        "sources": {},
    }
    doc.update(overrides)
    return doc


def test_parse_profile_accepts_minimal_document() -> None:
    assert parse_profile(_minimal(), "t.toml").heap_bytes == 128 * 1024


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"runtimes": ["wasm"]}, "runtimes"),
        ({"kind": "fpga"}, "kind"),
        ({"ram": "lots"}, "'ram'"),
        ({"cpu_mhz": "100"}, "cpu_mhz"),
        ({"allocatable": {"memory": "1Mi", "cpu": "1", "flash": "1Ki"}}, "allocatable memory"),
        ({"allocatable": {"memory": "1Ki", "cpu": "2", "flash": "1Ki"}}, "allocatable cpu"),
        ({"allocatable": {"memory": "1Ki", "cpu": "1"}}, "'flash'"),
    ],
)
def test_parse_profile_rejects_bad_documents(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ProfileError, match=fragment) as err:
        parse_profile(_minimal(**overrides), "hardware/bad.toml")
    assert "hardware/bad.toml" in str(err.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("1", 1),
        ("64Ki", 65536),
        ("3Gi", 3 * 2**30),
        ("1.5Gi", 3 * 2**29),
        ("3500m", 3.5),
        ("100m", 0.1),
        ("2k", 2000),
        ("1M", 10**6),
        ("1G", 10**9),
        ("1E", 10**18),
        ("1e3", 1000),
        ("5E-1", 0.5),
        ("0.5", 0.5),
        (".5", 0.5),
        ("+2", 2),
        ("-1Ki", -1024),
        (2, 2),
        (0.25, 0.25),
    ],
)
def test_parse_quantity(text: str | int | float, value: int | float) -> None:
    parsed = parse_quantity(text)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    "bad", ["", "Mi", "1 Mi", "1mi", "1K", "1.2.3", "1KiB", "abc", " 1", "1e", True, None]
)
def test_parse_quantity_rejects_garbage(bad: object) -> None:
    with pytest.raises(QuantityError) as err:
        parse_quantity(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(err.value)


def test_cpu_millis_and_bytes_round_up() -> None:
    assert parse_cpu_millis("3500m") == 3500
    assert parse_cpu_millis("2") == 2000
    assert parse_cpu_millis("0.0001") == 1
    assert parse_cpu_millis(1.5) == 1500
    assert parse_bytes("1.5Ki") == 1536
    assert parse_bytes("0.5") == 1
    assert parse_bytes("128Mi") == 128 * 2**20


def test_format_bytes_round_trips() -> None:
    for n in (0, 1, 1000, 1024, 1536, 65536, 3 * 2**30):
        assert parse_bytes(format_bytes(n)) == n
    assert format_bytes(65536) == "64Ki"
    assert format_bytes(1536) == "1536"
    assert format_bytes(3 * 2**30) == "3Gi"
