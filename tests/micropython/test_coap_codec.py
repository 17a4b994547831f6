"""Host-side tests of coap.py's pure codec, imported under CPython and checked against aiocoap."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import aiocoap
import pytest
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import BlockOption
from hypothesis import given, settings
from hypothesis import strategies as st

PATH = Path(__file__).resolve().parents[2] / "device-firmware" / "micropython" / "coap.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleetlet_mpy_coap", PATH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


coap = _load()

# aiocoap decodes registered options by type (UTF-8 strings, uints); compare opaque ones
REGISTERED = {int(n) for n in OptionNumber.__members__.values()}

options = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 20), st.integers(0, 300), st.integers(0, 65000)),
        st.binary(max_size=300),
    ),
    max_size=12,
)


def stable_sorted(opts: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    return sorted(opts, key=lambda o: o[0])  # CPython's sort is stable


@settings(max_examples=300)
@given(options)
def test_options_round_trip(opts: list[tuple[int, bytes]]) -> None:
    buf = coap.encode_options(opts)
    decoded, end = coap.decode_options(buf, 0, len(buf))
    assert end == len(buf)
    assert decoded == stable_sorted(opts)


@settings(max_examples=200)
@given(
    st.integers(0, 3),
    st.integers(1, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=8),
    options.map(lambda opts: [o for o in opts if o[0] in (1, 4) or o[0] not in REGISTERED]),
    st.binary(max_size=64),
)
def test_message_agrees_with_aiocoap(
    mtype: int, code: int, mid: int, token: bytes, opts: list[tuple[int, bytes]], payload: bytes
) -> None:
    wire = bytes(coap.encode(mtype, code, mid, token, opts, payload))
    ours = coap.decode(wire)
    assert (ours.type, ours.code, ours.mid, ours.token, ours.payload) == (mtype, code, mid, token, payload)
    assert ours.opts == stable_sorted(opts)
    theirs = aiocoap.Message.decode(wire)
    assert [(o.number, o.encode()) for o in theirs.opt.option_list()] == stable_sorted(opts)
    assert theirs.payload == payload and theirs.token == token and theirs.mid == mid


@given(st.binary(max_size=64))
def test_decode_rejects_garbage_only_with_valueerror(data: bytes) -> None:
    try:
        coap.decode(data)
    except ValueError:
        pass


@pytest.mark.parametrize(
    ("v1", "v2", "fresh"),
    [
        (1, 2, True),
        (2, 1, False),
        (0xFFFFFF, 0, True),
        (0, 0xFFFFFF, False),
        (5, 5, False),
        (0, 0x7FFFFF, True),
        (0, 0x800001, False),
    ],
)
def test_observe_sequence_rule(v1: int, v2: int, fresh: bool) -> None:
    assert coap.fresher(v1, v2, 1000, 2000) is fresh
    assert coap.fresher(v1, v2, 0, 129_000)  # anything after 128 s is fresh (RFC 7641 3.4)


@given(st.integers(0, (1 << 20) - 1), st.booleans(), st.integers(0, 6))
def test_block_option(num: int, more: bool, szx: int) -> None:
    value = coap.block_encode(num, more, szx)
    assert coap.block_decode(value) == (num, more, szx)
    theirs = BlockOption(23)
    theirs.decode(coap.uint(value))
    assert tuple(theirs.value) == (num, more, szx)


def test_split_uri() -> None:
    assert coap.split_uri("/rd?ep=esp-1", {"lt": "300"}) == [(15, b"ep=esp-1"), (11, b"rd"), (15, b"lt=300")]
    expected = [(11, b"b"), (11, b"x"), (11, b"y"), (15, b"a=1"), (15, b"b=2")]
    assert coap.split_uri("b/x//y/", "a=1&b=2") == expected
