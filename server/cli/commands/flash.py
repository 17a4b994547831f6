"""``fleetlet device flash``: copy the MicroPython firmware and a device config to a board.

    fleetlet device flash --port /dev/ttyUSB0 --config device.json [--mpy] [--dry-run]

Uses mpremote (``mpremote connect PORT fs cp ...``). With ``--mpy`` every module except
main.py (a board runs main.py from source) is compiled by mpy-cross first, and stale ``.py``
copies of those modules are removed from the board, since an import prefers ``x.py`` over
``x.mpy``. ``--dry-run`` prints the exact commands and runs none of them.

The command attaches itself to the ``device`` group of commands/device.py when this module
is imported; ``COMMANDS`` is empty so the group is not registered twice.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from ..errors import UserError
from .device import device_group

SOURCE_ONLY = ("main.py",)
SKIP = ("__init__.py",)


def firmware_dir() -> Path:
    import fleetlet.firmware

    return Path(fleetlet.firmware.__file__).resolve().parent


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def check_config(path: Path) -> dict[str, object]:
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise UserError(f"{path} is not JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a JSON object")
    missing = [k for k in ("host", "token") if not cfg.get(k)]
    if not (cfg.get("device") or cfg.get("name")):
        missing.insert(0, "device")
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)} (see `fleetlet device add`)")
    return cfg


def plan(port: str, config: Path, mpy: bool, build: Path) -> list[list[str]]:
    """The commands that flash a board, in order (mpy-cross first when ``mpy``)."""
    src = firmware_dir()
    mpremote = _tool("mpremote")
    cmds: list[list[str]] = []
    files: list[str] = []
    compiled: list[str] = []
    for f in sorted(src.glob("*.py")):
        if f.name in SKIP:
            continue
        if mpy and f.name not in SOURCE_ONLY:
            out = build / f"{f.stem}.mpy"
            cmds.append([_tool("mpy-cross"), "-o", str(out), str(f)])
            files.append(str(out))
            compiled.append(f.name)
        else:
            files.append(str(f))
    if compiled:
        code = f"import os; [os.remove(f) for f in {compiled!r} if f in os.listdir()]"
        cmds.append([mpremote, "connect", port, "exec", code])
    cmds.append([mpremote, "connect", port, "fs", "cp", *files, ":"])
    cmds.append([mpremote, "connect", port, "fs", "cp", str(config), ":device.json"])
    cmds.append([mpremote, "connect", port, "reset"])
    return cmds


@click.command("flash")
@click.option("--port", required=True, help="Serial port of the board, e.g. /dev/ttyUSB0.")
@click.option(
    "--config",
    "config",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Device config from `fleetlet device add -o` (copied as device.json).",
)
@click.option("--mpy", is_flag=True, help="Compile the modules with mpy-cross first (less RAM on the board).")
@click.option("--dry-run", is_flag=True, help="Print the commands; run nothing.")
def flash_cmd(port: str, config: Path, mpy: bool, dry_run: bool) -> None:
    """Copy the MicroPython firmware and CONFIG to the board on PORT with mpremote."""
    check_config(config)
    with tempfile.TemporaryDirectory(prefix="fleetlet-flash-") as tmp:
        for cmd in plan(port, config, mpy, Path(tmp)):
            click.echo(shlex.join(cmd))
            if dry_run:
                continue
            try:
                proc = subprocess.run(cmd, check=False)
            except OSError as e:
                raise UserError(f"cannot run {cmd[0]}: {e.strerror or e}") from None
            if proc.returncode != 0:
                raise UserError(f"{Path(cmd[0]).name} failed with exit code {proc.returncode}")


device_group.add_command(flash_cmd)
COMMANDS: list[click.Command] = []
