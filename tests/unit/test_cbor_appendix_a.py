"""RFC 8949 Appendix A through the gateway's generic CBOR layer (cbor2 underneath)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from fleetlet.gateway.wire import WireError, decode_value, encode_value

APPENDIX_A = Path("/work/shared/vectors/cbor-appendix-a.json")  # a session's shared/
if not APPENDIX_A.exists():  # CI lays shared/ beside the clone
    APPENDIX_A = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "cbor-appendix-a.json"

ITEMS: list[dict[str, Any]] = []
if APPENDIX_A.exists():
    ITEMS = json.loads(APPENDIX_A.read_text(encoding="utf-8"))

# cbor2 turns tags 0 and 1 into datetimes and writes them back as tag 0 text, so their
# bytes do not survive a round trip through Python values. The wire never carries tags.
NO_ROUNDTRIP = {"c11a514b67b0", "c1fb41d452d9ec200000"}
# Not well-formed under RFC 8949 section 3.3 (two-byte simple value below 32); from RFC 7049.
MUST_REJECT = {"f818"}

DIAGNOSTIC: dict[str, Any] = {
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "undefined": cbor2.undefined,
    "simple(16)": cbor2.CBORSimpleValue(16),
    "simple(255)": cbor2.CBORSimpleValue(255),
    # cbor2's semantic decoding: tags 0 and 1 are datetimes; tag 32 (URI) stays a tag.
    '0("2013-03-21T20:04:00Z")': datetime(2013, 3, 21, 20, 4, tzinfo=UTC),
    "1(1363896240)": datetime(2013, 3, 21, 20, 4, tzinfo=UTC),
    "1(1363896240.5)": datetime(2013, 3, 21, 20, 4, 0, 500000, tzinfo=UTC),
    '32("http://www.example.com")': cbor2.CBORTag(32, "http://www.example.com"),
    "23(h'01020304')": cbor2.CBORTag(23, b"\x01\x02\x03\x04"),
    "24(h'6449455446')": cbor2.CBORTag(24, b"dIETF"),
    "h''": b"",
    "h'01020304'": b"\x01\x02\x03\x04",
    "{1: 2, 3: 4}": {1: 2, 3: 4},
    "(_ h'0102', h'030405')": b"\x01\x02\x03\x04\x05",
}


def test_appendix_a_is_present() -> None:
    if not ITEMS:
        pytest.fail(f"RFC 8949 Appendix A vectors not found at {APPENDIX_A}")
    assert len(ITEMS) > 80


@pytest.mark.parametrize("item", ITEMS, ids=lambda it: it["hex"][:24])
def test_appendix_a_item(item: dict[str, Any]) -> None:
    data = bytes.fromhex(item["hex"])
    if item["hex"] in MUST_REJECT:
        with pytest.raises(WireError):
            decode_value(data)
        return
    value = decode_value(data)
    if "decoded" in item:
        want = item["decoded"]
        assert type(value) is type(want) and value == want
        if isinstance(want, float) and want == 0:
            assert math.copysign(1, value) == math.copysign(1, want)
    elif item["diagnostic"] == "NaN":
        assert math.isnan(value)
    else:
        # Every item's value is checked: one given only in diagnostic notation needs an entry.
        assert item["diagnostic"] in DIAGNOSTIC, f"no expected value for {item['diagnostic']}"
        want = DIAGNOSTIC[item["diagnostic"]]
        assert type(value) is type(want) and value == want
    if item["roundtrip"] and item["hex"] not in NO_ROUNDTRIP:
        assert encode_value(value).hex() == item["hex"]
