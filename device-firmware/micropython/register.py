# register.py - one registration attempt: POST hello to /rd?ep=<device>, read the answer.
#
# hello carries what the gateway knows of the device: board, firmware version, native-code
# architecture, free and total heap, boot count, token, free flash. The agent imports this
# module (and with it msg.py) for a registration only, and drops both again.

import gc
import os
import sys
from micropython import const
from time import ticks_add, ticks_ms

import msg
from agent import VERSION

_CBOR_CF = const(60)  # CoAP Content-Format: application/cbor
_CREATED = const(0x41)  # 2.01

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


async def attempt(a):
    """Register the agent `a` once; -> True when the gateway took it (a.due says until when)."""
    g = a.cfg.get
    tok = g("token")
    hello = msg.hello(g("board", sys.platform), VERSION, arch(), ["micropython"], gc.mem_free(),
                      a.st["boot"], tok.encode() if tok else None, gc.mem_free() + gc.mem_alloc(),
                      flash_free(a.root))
    r = await a.client.post("/rd?ep=" + a.name, hello, content_format=_CBOR_CF)
    hello = None
    if r.code != _CREATED:
        a._err("registration refused: %s" % r.code_str())
        return False
    life = msg.read_registered(r.payload)[0]
    a.due = ticks_add(ticks_ms(), max(life * 800, 5000))
    print("fleetlet: registered as %s" % a.name)
    return True
