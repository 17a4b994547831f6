"""`fleetlet agent` and `fleetlet gateway --registry-mirror` as an operator meets them: the help
texts explain every option, and bad input is one clear line, not a traceback.

These run the real console script; they need no Docker Engine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def _run(fleetlet_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([fleetlet_bin, *args], capture_output=True, text=True, timeout=60)


def _options_without_help(text: str) -> list[str]:
    """Options in an argparse/click help listing that carry no help text."""
    lines = text.splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^ {2}(-\S+(?: \S+)?)( {2,}\S.*)?$", line)
        if m is None or m[2]:
            continue
        # An option alone on its line: its help must follow, indented deeper.
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not re.match(r"^ {6,}\S", nxt):
            bare.append(m[1])
    return bare


def test_agent_help_explains_every_option(fleetlet_bin: str) -> None:
    proc = _run(fleetlet_bin, "agent", "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for flag in (
        "--config",
        "--device",
        "--gateway",
        "--token-file",
        "--docker-host",
        "--data-dir",
        "--registry-mirror",
        "--mirror-upstream",
        "--gc-high",
        "--gc-low",
    ):
        assert flag in text, flag
    assert _options_without_help(text) == [], text
    # What it does, how to start it, and what a --config file may hold.
    assert "Docker Engine" in text and "adopts" in text
    assert "fleetlet agent --device" in text
    assert "gc_measure" in text and "report_interval" in text
    assert "Traceback" not in proc.stderr


def test_agent_bad_input_is_one_clear_line(fleetlet_bin: str, tmp_path: Path) -> None:
    missing = _run(fleetlet_bin, "agent")
    assert missing.returncode == 2 and "--device" in missing.stderr
    nofile = _run(fleetlet_bin, "agent", "--device", "pi-1", "--config", str(tmp_path / "nope.yaml"))
    assert nofile.returncode == 2 and "nope.yaml" in nofile.stderr
    bad = tmp_path / "agent.yaml"
    bad.write_text("device: pi-1\ngc-hihg: 90\nfavourite_colour: blue\n")
    unknown = _run(fleetlet_bin, "agent", "--config", str(bad))
    assert unknown.returncode == 2
    assert "unknown keys: favourite_colour, gc_hihg" in unknown.stderr
    for proc in (missing, nofile, unknown):
        assert "Traceback" not in proc.stderr, proc.stderr


def test_gateway_registry_mirror_help(fleetlet_bin: str) -> None:
    proc = _run(fleetlet_bin, "gateway", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # click wraps lines
    assert "--registry-mirror [UPSTREAM]" in text
    assert "pull-through cache" in text and "docker-registry" in text
    # It tells the operator how devices use it.
    assert "offers it to devices when they register" in text
    assert "--registry-mirror-listen HOST:PORT Where the mirror listens" in text
