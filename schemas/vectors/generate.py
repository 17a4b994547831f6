"""Author the wire test vectors: ``python schemas/vectors/generate.py [--force]``.

The vectors are pinned data. Tests never regenerate them: they check that both codecs
reproduce these bytes. This script only exists so a person adding a vector does not
hand-assemble hex. It refuses to change the hex of an existing vector unless given
--force, because that is a wire protocol change.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fleetlet.gateway.wire.cbor import decode_value, encode_value
from fleetlet.schemas.wire_loader import MESSAGE_RULES, tag

HERE = Path(__file__).resolve().parent

MAIN_PY = b"async def main(ctx):\n    ctx.log('hello')\n"
UTIL_MPY = bytes(range(64))
SHA_MAIN = hashlib.sha256(MAIN_PY).digest()
SHA_UTIL = hashlib.sha256(UTIL_MPY).digest()
UID_A = "6f1c3c4e-2f7b-4d0a-9a41-0c5d2b7e8f10"
UID_B = "b2d4e6f8-1a3c-4e5f-8a7b-9c0d1e2f3a4b"

# (name, description, value[, sender]) per message type. Keys are the CDDL constants. A
# sender ("agent": only the SBC agent sends it) marks a vector the firmware's message builders
# do not produce; the MicroPython test checks it with the generic CBOR codec only.
VECTORS: dict[str, list[tuple[Any, ...]]] = {
    "hello": [
        (
            "minimal",
            "microcontroller with only the required fields",
            {0: 1, 1: "esp32-s3", 2: "0.1.0", 3: "xtensawin", 4: ["micropython"], 5: 61440, 6: 1},
        ),
        (
            "full",
            "SBC with every field; mem-total needs an 8-byte uint",
            {
                0: 1,
                1: "raspberry-pi-4",
                2: "0.1.0",
                3: "aarch64",
                4: ["docker", "micropython"],
                5: 3221225472,
                6: 42,
                7: bytes.fromhex("00112233445566778899aabbccddeeff"),
                8: 8589934592,
                9: 25000000000,
            },
        ),
    ],
    "registered": [
        ("minimal", "lifetime and location only", {0: 1, 1: 300, 2: "/rd/4f2a"}),
        (
            "with-time",
            "gateway clock for a board without an RTC",
            {0: 1, 1: 86400, 2: "/rd/esp32-s3-kitchen", 3: 1764165600},
        ),
        (
            "with-mirror",
            "an SBC's registration at a gateway running a registry mirror (the firmware ignores it)",
            {
                0: 1,
                1: 3600,
                2: "/rd/pi-7",
                3: 1764165600,
                4: {1: "127.0.0.1:5001", 2: "registry.local:5000"},
            },
        ),
    ],
    "desired": [
        ("minimal", "nothing to run", {0: 1, 1: 0}),
        (
            "micropython",
            "one MicroPython app with modules, every config value type, and secrets",
            {
                0: 1,
                1: 7,
                2: [
                    {
                        1: UID_A,
                        2: "default/thermostat",
                        3: 3,
                        4: "micropython",
                        5: 1,
                        6: "main",
                        7: [
                            {1: SHA_MAIN, 2: len(MAIN_PY), 3: "main.py"},
                            {1: SHA_UTIL, 2: len(UTIL_MPY), 3: "lib/util.mpy"},
                        ],
                        8: {
                            "unit": "C",
                            "interval": 30,
                            "offset": -2,
                            "gain": 0.5,
                            "ratio": 0.1,
                            "big": 100000.0,
                            "debug": False,
                            "enabled": True,
                            "calib": None,
                            "key": b"\x01\x02",
                        },
                        9: {"wifi_psk": b"hunter2"},
                    }
                ],
            },
        ),
        (
            "docker",
            "one docker workload: a full container and a minimal sidecar, each probe kind",
            {
                0: 1,
                1: 70000,
                2: [
                    {
                        1: UID_B,
                        2: "edge/web",
                        3: 12,
                        4: "docker",
                        10: [
                            {
                                1: "web",
                                2: "registry.local:5000/web:1.4.2",
                                3: ["/bin/server"],
                                4: ["--port", "8080"],
                                5: {"LOG_LEVEL": "info", "TZ": "UTC"},
                                6: [{1: 8080, 2: 80}, {1: 5353, 3: "udp"}],
                                7: {1: 134217728, 2: 500},
                                8: {2: {1: "/healthz", 2: 8080}, 4: 5, 5: 10, 6: 2, 7: 3},
                                9: {3: 8080, 8: 1},
                            },
                            {1: "sidecar", 2: "busybox:1.36", 8: {1: ["cat", "/tmp/ok"]}},
                        ],
                    }
                ],
            },
        ),
        (
            "mixed",
            "two minimal workloads of different runtimes, restart policy never",
            {
                0: 1,
                1: 2,
                2: [
                    {1: UID_A, 2: "default/blink", 3: 1, 4: "micropython", 6: "blink"},
                    {1: UID_B, 2: "default/job", 3: 1, 4: "docker", 5: 2, 10: [{1: "job", 2: "alpine"}]},
                ],
            },
        ),
        (
            "docker-volumes",
            "no network; a volume of each kind, mounted (one read-only); a working dir",
            {
                0: 1,
                1: 9,
                2: [
                    {
                        1: "u",
                        2: "edge/shop",
                        3: 4,
                        4: "docker",
                        10: [
                            {
                                1: "api",
                                2: "busybox",
                                10: [
                                    {1: "d", 2: "/d"},
                                    {1: "h", 2: "/etc/h", 3: True},
                                    {1: "s", 2: "/s"},
                                    {1: "c", 2: "/c"},
                                ],
                                11: "/srv",
                            }
                        ],
                        11: [
                            {1: "d"},
                            {1: "h", 2: "/etc/h"},
                            {1: "s", 3: {"pw": b"\x00"}},
                            {1: "c", 4: {"a.conf": b"x"}},
                        ],
                        12: 1,
                    }
                ],
            },
        ),
    ],
    "report": [
        ("minimal", "applied gen 0, nothing running", {0: 1, 1: 0}),
        (
            "full",
            "two workloads (running and crash-looping after a rollback) with metrics",
            {
                0: 1,
                1: 7,
                2: [
                    {1: UID_A, 2: 3, 3: 3, 8: True},
                    {
                        1: UID_B,
                        2: 12,
                        3: 6,
                        4: 5,
                        5: -1,
                        6: "ImportError: no module named 'sensor'",
                        7: True,
                        8: False,
                    },
                ],
                3: 48123,
                4: 3600,
                5: {"temp_c": 21.5, "rssi": -67, "vbat": 100000.0, "load": 0.1},
                6: "blob 9f86d0 sha256 mismatch",
            },
        ),
        (
            "exit-code",
            "a docker job that succeeded, large exit code and restarts",
            {0: 1, 1: 65536, 2: [{1: UID_B, 2: 1, 3: 4, 4: 1000, 5: 137}]},
        ),
        (
            "containers",
            "SBC agent: a docker workload's containers, one serving, one crash-looping (cpu 0 kept)",
            {
                0: 1,
                1: 12,
                2: [
                    {
                        1: UID_B,
                        2: 12,
                        3: 6,
                        4: 3,
                        5: 137,
                        8: False,
                        9: [
                            {1: "web", 2: 3, 5: True, 6: 250, 7: 52428800},
                            {1: "sidecar", 2: 6, 3: 3, 4: 137, 5: False, 6: 0, 7: 4096},
                        ],
                    }
                ],
                3: 734003200,
                4: 86400,
            },
            "agent",
        ),
    ],
    "log_batch": [
        ("minimal", "empty batch of a MicroPython app", {0: 1, 1: UID_A, 3: []}),
        (
            "full",
            "docker container lines on the uptime clock, both streams, non-ASCII text",
            {
                0: 1,
                1: UID_B,
                2: "web",
                3: [
                    [3600123, 0, "listening on :8080"],
                    [3600456, 1, "warn: température élevée ⚠"],
                ],
                4: 1,
                5: 3,
            },
        ),
    ],
    "blob_ref": [
        ("small", "a 44-byte main.py", {1: SHA_MAIN, 2: len(MAIN_PY), 3: "main.py"}),
        ("large", "a 1 MiB file: size needs 4 bytes", {1: bytes(32), 2: 1048576, 3: "lib/model.bin"}),
    ],
}

# Well-formed CBOR that breaks the CDDL. ``error`` is the start of the WireError message.
INVALID: dict[str, list[tuple[str, Any, str]]] = {
    "hello": [
        (
            "runtimes-not-array",
            {0: 1, 1: "esp32", 2: "0.1.0", 3: "xtensawin", 4: "micropython", 5: 1, 6: 1},
            "hello.runtimes: expected array, got tstr",
        ),
        (
            "version-2",
            {0: 2, 1: "esp32", 2: "0.1.0", 3: "xtensawin", 4: ["micropython"], 5: 1, 6: 1},
            "hello.v: unsupported protocol version 2",
        ),
    ],
    "registered": [
        ("negative-lifetime", {0: 1, 1: -5, 2: "/rd/x"}, "registered.lifetime: expected uint, got nint"),
        ("version-2", {0: 2, 1: 60, 2: "/rd/x"}, "registered.v: unsupported protocol version 2"),
    ],
    "desired": [
        ("missing-gen", {0: 1}, "desired.gen: missing"),
        ("version-2", {0: 2, 1: 1}, "desired.v: unsupported protocol version 2"),
        (
            "short-sha256",
            {
                0: 1,
                1: 1,
                2: [{1: "u", 2: "n", 3: 1, 4: "micropython", 6: "main", 7: [{1: bytes(31), 2: 1, 3: "a"}]}],
            },
            "desired.workloads[0].modules[0].sha256: expected 32 bytes, got 31",
        ),
        (
            "port-as-text",
            {0: 1, 1: 1, 2: [{1: "u", 2: "n", 3: 1, 4: "docker", 10: [{1: "c", 2: "i", 6: [{1: "80"}]}]}]},
            "desired.workloads[0].containers[0].ports[0].container: expected uint, got tstr",
        ),
    ],
    "report": [
        (
            "state-as-text",
            {0: 1, 1: 1, 2: [{1: "a", 2: 1, 3: 3}, {1: "b", 2: 1, 3: 0}, {1: "c", 2: 1, 3: "running"}]},
            "report.workloads[2].state: expected uint, got tstr",
        ),
        ("no-version", {1: 1}, "report.v: missing"),
        ("version-2", {0: 2, 1: 1}, "report.v: unsupported protocol version 2"),
        (
            "negative-cpu",
            {0: 1, 1: 1, 2: [{1: "u", 2: 1, 3: 3, 9: [{1: "c", 2: 3, 6: -5}]}]},
            "report.workloads[0].containers[0].cpu: expected uint, got nint",
        ),
    ],
    "log_batch": [
        ("bad-stream", {0: 1, 1: "u", 3: [[1, 2, "x"]]}, "log-batch.lines[0].stream: unknown value 2"),
        ("version-2", {0: 2, 1: "u", 3: []}, "log-batch.v: unsupported protocol version 2"),
    ],
    "blob_ref": [
        ("missing-size", {1: bytes(32), 3: "a"}, "blob-ref.size: missing"),
    ],
}


def build(message_type: str) -> dict[str, Any]:
    vectors = []
    for name, description, value, *sender in VECTORS[message_type]:
        data = encode_value(value)
        vector: dict[str, Any] = {"name": name, "description": description}
        if sender:
            vector["sender"] = sender[0]
        # Tag the decoded value so $map entries follow the encoded (sorted) key order.
        vector.update(hex=data.hex(), decoded=tag(decode_value(data)))
        vectors.append(vector)
    invalid = [
        {"name": name, "hex": encode_value(value).hex(), "error": error}
        for name, value, error in INVALID.get(message_type, [])
    ]
    return {"type": message_type, "rule": MESSAGE_RULES[message_type], "vectors": vectors, "invalid": invalid}


def _format(doc: dict[str, Any]) -> str:
    """Indented JSON, but each decoded value on one line so a vector reads as a unit."""
    compact: list[str] = []
    for i, vector in enumerate(doc["vectors"]):
        compact.append(json.dumps(vector["decoded"], ensure_ascii=False))
        vector["decoded"] = f"@@{i}@@"
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    for i, line in enumerate(compact):
        text = text.replace(f'"@@{i}@@"', line)
    return text + "\n"


def main(argv: list[str]) -> int:
    force = "--force" in argv
    for message_type in MESSAGE_RULES:
        path = HERE / f"{message_type}.json"
        new = build(message_type)
        if path.exists() and not force:
            old = {v["name"]: v["hex"] for v in json.loads(path.read_text(encoding="utf-8"))["vectors"]}
            changed = [v["name"] for v in new["vectors"] if v["name"] in old and old[v["name"]] != v["hex"]]
            if changed:
                print(f"{path.name}: hex of {changed} would change; rerun with --force", file=sys.stderr)
                return 1
        path.write_text(_format(new), encoding="utf-8")
        print(f"wrote {path.name}: {len(new['vectors'])} vectors, {len(new['invalid'])} invalid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
