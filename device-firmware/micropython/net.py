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

    def send(self, buf):
        self.sock.send(buf)

    def recv_into(self, buf):
        # a generator, not `async def`: it yields to asyncio's poller like asyncio.StreamReader
        while True:
            # asyncio's own poller, as asyncio.StreamReader uses it (MicroPython-internal: not
            # in the stubs). A test round with StreamReader.readinto instead saw payloads
            # corrupted, so this stays as it was.
            yield asyncio.core._io_queue.queue_read(self.sock)  # type: ignore[attr-defined]
            try:
                n = self.sock.readinto(buf)
            except OSError as e:
                if e.errno == 11:  # EAGAIN: spurious wake-up
                    continue
                raise  # e.g. ECONNREFUSED after an ICMP port-unreachable; the caller retries
            if n is not None:
                return n

    def close(self):
        self.sock.close()
