# Shared bits for the MicroPython test scripts: argv[1] is the peer's UDP port on 127.0.0.1.
import asyncio
import binascii
import json
import sys

import coap
import net


def client(**kw):
    kw.setdefault("ack_timeout", 0.3)
    return coap.Client(net.UDPTransport("127.0.0.1", int(sys.argv[1])), **kw)


async def until(pred, ms=10000):
    # poll a condition; the tests never assert on how long it took
    while not pred():
        if ms <= 0:
            return False
        await asyncio.sleep_ms(20)
        ms -= 20
    return True


def run(main):
    print("RESULT " + json.dumps(asyncio.run(main())))


def hexs(b):
    return binascii.hexlify(b).decode() if b is not None else None
