"""`fleetlet device flash` (server/cli/commands/flash.py).

A real board cannot be attached here, so these tests check the exact mpremote commands of
``--dry-run``, run the mpy-cross steps of the plan for real and import the result on the
MicroPython interpreter, and check that a bad config is refused before anything runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from fleetlet.server.cli.commands import flash
from fleetlet.server.cli.main import cli

pytestmark = pytest.mark.micropython

MODULES = sorted(p.name for p in flash.firmware_dir().glob("*.py") if p.name != "__init__.py")


def _config(tmp_path: Path, **over: object) -> Path:
    cfg = {"device": "board1", "host": "127.0.0.1", "port": 5683, "token": "fdc_x", **over}
    path = tmp_path / "board1.json"
    path.write_text(json.dumps(cfg))
    return path


def test_dry_run_prints_mpremote_commands(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    args = ["device", "flash", "--port", "/dev/ttyUSB0", "--config", str(cfg), "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [shlex.split(ln) for ln in result.output.splitlines()]
    assert [Path(ln[0]).name for ln in lines] == ["mpremote"] * 3
    copy, conf, reset = lines
    assert copy[1:5] == ["connect", "/dev/ttyUSB0", "fs", "cp"] and copy[-1] == ":"
    assert sorted(Path(f).name for f in copy[5:-1]) == MODULES
    assert {"main.py", "agent.py", "coap.py", "store.py"} <= set(MODULES)
    assert conf[1:] == ["connect", "/dev/ttyUSB0", "fs", "cp", str(cfg), ":device.json"]
    assert reset[1:] == ["connect", "/dev/ttyUSB0", "reset"]


def test_dry_run_mpy_compiles_all_but_main(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    args = ["device", "flash", "--port", "COM3", "--config", str(cfg), "--mpy", "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [shlex.split(ln) for ln in result.output.splitlines()]
    compiles = [ln for ln in lines if Path(ln[0]).name == "mpy-cross"]
    assert sorted(Path(ln[-1]).name for ln in compiles) == [m for m in MODULES if m != "main.py"]
    copy = next(ln for ln in lines if ln[3:5] == ["fs", "cp"] and ln[-1] == ":")
    names = sorted(Path(f).name for f in copy[5:-1])
    assert names == sorted(["main.py"] + [m[:-3] + ".mpy" for m in MODULES if m != "main.py"])
    # stale .py copies on the board would shadow the .mpy files: they are removed first
    rm = next(ln for ln in lines if "exec" in ln)
    assert "'agent.py'" in rm[-1] and "'main.py'" not in rm[-1]


def test_mpy_plan_builds_importable_firmware(tmp_path: Path, micropython_bin: str) -> None:
    build = tmp_path / "build"
    build.mkdir()
    cmds = flash.plan("/dev/null", _config(tmp_path), True, build)
    for cmd in cmds:
        if Path(cmd[0]).name == "mpy-cross":
            subprocess.run(cmd, check=True)
    env = dict(os.environ, MICROPYPATH=f".frozen:{build}")
    # every module that the agent imports only when needed (register, msg, applier, store,
    # versions, cbor_dec, cbor_ext) must import from the .mpy build too
    code = (
        "import agent, supervisor, register, msg, applier, store, versions, cbor_dec, cbor_ext;"
        " print(agent.VERSION, register.arch())"
    )
    argv = [micropython_bin, "-X", "heapsize=128k", "-c", code]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0.1.0", "x64"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not JSON"), (json.dumps({"device": "x", "host": "h"}), "missing token")],
)
def test_bad_config_refused(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(content)
    result = CliRunner().invoke(cli, ["device", "flash", "--port", "/dev/ttyUSB0", "--config", str(cfg)])
    assert result.exit_code == 1
    assert message in result.output and "mpremote" not in result.output
