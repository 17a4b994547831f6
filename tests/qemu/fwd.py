"""Host end of a QEMU ``guestfwd=tcp:ADDR:PORT-cmd:...`` rule: one process per guest connection.

slirp (QEMU user networking) runs this for every TCP connection the guest opens to ADDR:PORT,
with the connection on stdin/stdout:

    python fwd.py tcp 127.0.0.1 8080   # the connection, byte for byte, to a host TCP port
    python fwd.py udp 127.0.0.1 5683   # 2-byte length-framed datagrams <-> a host UDP port

The UDP mode exists because slirp's guestfwd forwards TCP only: the board's udp_shim.py
turns the agent's CoAP datagrams into frames on a TCP connection, and this end turns them
back into datagrams to the gateway on the host's loopback (and the answers the other way).
Only 127.0.0.1 is accepted as a target.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import sys

LOOPBACK = "127.0.0.1"


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pipe_tcp(port: int) -> None:
    sock = socket.create_connection((LOOPBACK, port))
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    sel.unregister(0)
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                _write_all(1, data)


def pipe_udp(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((LOOPBACK, port))
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == 0:
                head = _read_exact(0, 2)
                if head is None:
                    return
                body = _read_exact(0, struct.unpack("!H", head)[0])
                if body is None:
                    return
                sock.send(body)
            else:
                try:
                    data = sock.recv(65536)
                except ConnectionRefusedError:  # nobody on the port (yet): CoAP retransmits
                    continue
                _write_all(1, struct.pack("!H", len(data)) + data)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("tcp", "udp") or argv[2] != LOOPBACK:
        print(f"usage: {argv[0]} tcp|udp {LOOPBACK} PORT", file=sys.stderr)
        return 2
    try:
        (pipe_tcp if argv[1] == "tcp" else pipe_udp)(int(argv[3]))
    except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
