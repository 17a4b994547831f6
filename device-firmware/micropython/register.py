# sysinfo.py - what hello reports about the device itself: its native-code architecture and
# the free space on its flash. Imported for a registration only (agent.py drops it again).

import os
import sys

# sys.implementation._mpy bits 10..13 number the architectures in this order (py/persistentcode.h)
_ARCHS = " x86 x64 armv6 armv6m armv7m armv7em armv7emsp armv7emdp xtensa xtensawin rv32imc rv64imc"


def arch():
    """This interpreter's native-code architecture for hello.arch (from sys.implementation)."""
    try:
        return _ARCHS.split(" ")[(sys.implementation._mpy >> 10) & 15] or "unknown"  # type: ignore[attr-defined]
    except (AttributeError, IndexError):
        return "unknown"


def flash_free(root):
    """Free bytes on the filesystem holding root, for hello.flash-free (None if unknown)."""
    try:
        s = os.statvfs(root)
        return s[0] * s[3]
    except (OSError, AttributeError):
        return None
