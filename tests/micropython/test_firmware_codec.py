"""The firmware's cbor.py and wire.py on the real MicroPython interpreter, 64 KiB heap."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fleetlet.gateway.wire import MESSAGES, decode_value, encode_value
from fleetlet.schemas.wire_loader import all_vector_files, untag

from .conftest import FIRMWARE, HERE, VECTORS, RunMicroPython

pytestmark = pytest.mark.micropython

VECTOR_FILES = sorted(VECTORS.glob("*.json"))


@pytest.fixture(scope="module")
def one_vector_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every vector as one line of a JSON-lines file (same types, same order). A device decodes
    one message at a time; with a whole vector file loaded as JSON next to the message, the
    64 KiB heap ran out by fragmentation on the larger docker vectors, depending on where
    earlier objects lay (it failed in a full CI run and passed alone)."""
    lines: list[str] = []
    for path in VECTOR_FILES:
        doc = json.loads(path.read_text())
        for group in ("vectors", "invalid"):
            for v in doc.get(group) or []:
                lines.append(json.dumps({"type": doc["type"], "vectors": [], "invalid": [], group: [v]}))
    out = tmp_path_factory.mktemp("vectors") / "vectors.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return [out]


# Appendix A items whose expected value MicroPython cannot load (the byte round trip
# still runs): its json module does not join the UTF-16 surrogate pair "\ud800\udd51".
SKIPPED_VALUES = {"64f0908591"}
# Not well-formed under RFC 8949 section 3.3; both codecs must reject it.
MUST_REJECT = {"f818"}
# Invalid vectors wire.py does not catch: it leaves docker containers to the gateway and
# SBC agent, since a microcontroller never runs them.
FIRMWARE_ACCEPTS = {"w/desired/invalid/port-as-text"}


def _parse(proc: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines and lines[-1] == "DONE", proc.stdout[-2000:] + proc.stderr[-2000:]
    results: dict[str, tuple[str, str]] = {}
    for line in lines[:-1]:
        status, _, rest = line.partition(" ")
        ident, _, detail = rest.partition(" ")
        results[ident] = (status, detail)
    return results


@pytest.fixture(scope="module")
def vector_results(
    run_micropython: RunMicroPython, appendix_a: Path, one_vector_files: list[Path]
) -> dict[str, tuple[str, str]]:
    return _parse(run_micropython(HERE / "mp_vectors.py", FIRMWARE, appendix_a, *one_vector_files))


def _failures(results: dict[str, tuple[str, str]]) -> list[str]:
    return [f"{k}: {d}" for k, (s, d) in results.items() if s == "FAIL"]


def test_nothing_fails(vector_results: dict[str, tuple[str, str]]) -> None:
    assert _failures(vector_results) == []


def test_appendix_a_every_item_checked(vector_results: dict[str, tuple[str, str]], appendix_a: Path) -> None:
    items = json.loads(appendix_a.read_text(encoding="utf-8"))
    expected: set[str] = set()
    for item in items:
        h = item["hex"]
        if h in MUST_REJECT:
            expected.add(f"a/{h}/rejected")
            continue
        if h not in SKIPPED_VALUES:
            expected.add(f"a/{h}/decode")
        if item["roundtrip"]:
            expected.add(f"a/{h}/roundtrip")
    passed = {k for k, (s, _) in vector_results.items() if s == "PASS" and k.startswith("a/")}
    assert expected - passed == set()
    skipped = {k for k, (s, _) in vector_results.items() if s == "SKIP"}
    assert skipped == {f"a/{h}/decode" for h in SKIPPED_VALUES}


def test_wire_vectors_byte_exact(vector_results: dict[str, tuple[str, str]]) -> None:
    # Every vector through the generic codec; the firmware's own messages also through the
    # builders and readers of wire.py ("wire"). Vectors with a sender (the SBC agent) have
    # no builder there: test_other_senders_vectors_decode_as_in_cpython covers them.
    expected = set()
    for f in all_vector_files():
        for v in f["vectors"]:
            checks = ("encode", "decode", "roundtrip") + (() if "sender" in v else ("wire",))
            expected |= {f"w/{f['type']}/{v['name']}/{check}" for check in checks}
    assert len(expected) >= 4 * 15
    passed = {k for k, (s, _) in vector_results.items() if s == "PASS"}
    assert expected - passed == set()


def _strict_equal(a: Any, b: Any) -> bool:
    """Equality that tells 1 from 1.0 and True (Python's == does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def test_other_senders_vectors_decode_as_in_cpython(vector_results: dict[str, tuple[str, str]]) -> None:
    # A report with container statuses comes from the SBC agent, never from the firmware: the
    # firmware's generic CBOR codec decodes it (and re-encodes it byte for byte, checked above)
    # to the same value as CPython's codec, and the typed CPython decoder accepts it.
    others = [(f, v) for f in all_vector_files() for v in f["vectors"] if "sender" in v]
    assert {(f["type"], v["name"], v["sender"]) for f, v in others} >= {("report", "containers", "agent")}
    for f, v in others:
        ident = f"w/{f['type']}/{v['name']}"
        assert {f"{ident}/{c}" for c in ("encode", "decode", "roundtrip")} <= {
            k for k, (s, _) in vector_results.items() if s == "PASS"
        }
        status, text = vector_results[f"{ident}/value"]
        assert status == "VALUE"
        data = bytes.fromhex(v["hex"])
        in_cpython = decode_value(data)
        assert _strict_equal(untag(json.loads(text)), in_cpython), (ident, text)
        assert MESSAGES[f["rule"]].from_cbor(data).to_cbor() == data


def test_firmware_rejects_invalid_documents(vector_results: dict[str, tuple[str, str]]) -> None:
    checked = 0
    for f in all_vector_files():
        if f["type"] not in ("desired", "registered"):
            continue
        for v in f["invalid"]:
            ident = f"w/{f['type']}/invalid/{v['name']}"
            status, detail = vector_results[ident]
            if ident in FIRMWARE_ACCEPTS:
                assert status == "ACCEPT"
                continue
            assert status == "REJECT", ident
            assert detail.startswith(v["error"]), (ident, detail)
            checked += 1
    assert checked >= 3


def test_heap_is_free_again_after_all_vectors(vector_results: dict[str, tuple[str, str]]) -> None:
    # After every vector under a 64 KiB heap, over half is free again: the codec keeps no
    # payload, view or buffer alive at module level between calls.
    (free,) = [int(k) for k, (s, _) in vector_results.items() if s == "MEMFREE"]
    assert free > 32 * 1024


def test_malformed_input_raises_only_cbor_error(run_micropython: RunMicroPython) -> None:
    results = _parse(run_micropython(HERE / "mp_malformed.py", FIRMWARE, *VECTOR_FILES))
    assert _failures(results) == []
    passed = {k for k, (s, _) in results.items() if s == "PASS"}
    assert {"malformed/unhashable-key", "malformed/deep", "malformed/huge-array", "enc/key-order"} <= passed
    fuzzed = {k for k in passed if k.startswith("fuzz/")}
    assert len(fuzzed) == sum(len(f["vectors"]) for f in all_vector_files())


def test_encoder_expectations_match_the_gateway() -> None:
    # mp_malformed.py hard-codes expected encodings; pin them to the CPython codec too.
    text = (HERE / "mp_malformed.py").read_text(encoding="utf-8")
    assert '"a5050018640019" + "03e8002000616100"' in text
    assert encode_value({"a": 0, -1: 0, 1000: 0, 100: 0, 5: 0}).hex() == "a5050018640019" + "03e8002000616100"
    assert encode_value({"bb": 1, "a": 2, "c": 3}).hex() == "a3616102616303626262" + "01"


def test_runs_as_frozen_bytecode(
    run_micropython: RunMicroPython,
    mpy_cross_bin: str,
    appendix_a: Path,
    tmp_path: Path,
    one_vector_files: list[Path],
) -> None:
    # Boards run the firmware as .mpy from mpy-cross; the same vectors must pass. wire.py
    # takes hello() and its readers from msg.py; cbor.py its decoder from cbor_dec.py and
    # tags, simple values and bignums from cbor_ext.py.
    for name in ("cbor", "cbor_dec", "cbor_ext", "wire", "msg"):
        subprocess.run(
            [mpy_cross_bin, "-o", str(tmp_path / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")],
            check=True,
            capture_output=True,
        )
    assert not list(tmp_path.glob("*.py"))
    results = _parse(run_micropython(HERE / "mp_vectors.py", tmp_path, appendix_a, *one_vector_files))
    assert _failures(results) == []
    assert sum(1 for s, _ in results.values() if s == "PASS") > 150


def test_source_is_micropython_only_syntax() -> None:
    # The firmware must not lean on CPython-only modules at import time.
    for name in ("cbor.py", "cbor_dec.py", "cbor_ext.py", "wire.py", "msg.py"):
        source = (FIRMWARE / name).read_text(encoding="utf-8")
        for banned in ("import typing", "from typing", "dataclasses", "import enum", "from enum"):
            assert banned not in source, (name, banned)
