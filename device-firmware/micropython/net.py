"""UDP transport for coap.Client: send(buf) and awaitable recv_into(buf) -> n.

The socket is connect()ed to the peer, so the kernel/lwIP drops datagrams from anyone
else, and readinto() fills the caller's buffer without allocating. MicroPython only.
"""

import asyncio
import socket


class UDPTransport:
    def __init__(self, host, port=5683):
        addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(addr)
        self.sock.setblocking(False)
        # asyncio's stream over the socket: its readinto() waits in the poller, then reads
        self._rd = asyncio.StreamReader(self.sock)

    def send(self, buf):
        self.sock.send(buf)

    async def recv_into(self, buf):
        while True:
            try:
                n = await self._rd.readinto(buf)
            except OSError as e:
                if e.errno == 11:  # EAGAIN: spurious wake-up
                    continue
                raise  # e.g. ECONNREFUSED after an ICMP port-unreachable; the caller retries
            if n is not None:
                return n

    def close(self):
        self.sock.close()
