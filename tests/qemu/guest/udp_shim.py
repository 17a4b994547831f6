"""Board end of the UDP-over-TCP path to the host's gateway (arm64 CPython, stdlib only).

    python3 udp_shim.py LISTEN_PORT FWD_ADDR FWD_PORT

Listens for datagrams on 127.0.0.1:LISTEN_PORT. For each client address (the agent's CoAP
socket) it opens one TCP connection to FWD_ADDR:FWD_PORT, a QEMU guestfwd rule whose host
end (tests/qemu/fwd.py udp) sends the datagrams to the gateway on the host's loopback.
Datagrams travel as 2-byte length-prefixed frames; answers come back the same way and are
sent to the client address they belong to. Why: slirp forwards guest TCP only.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading


def read_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def back(
    udp: socket.socket,
    conn: socket.socket,
    client: tuple[str, int],
    peers: dict[tuple[str, int], socket.socket],
) -> None:
    try:
        while True:
            head = read_exact(conn, 2)
            if head is None:
                break
            body = read_exact(conn, struct.unpack("!H", head)[0])
            if body is None:
                break
            udp.sendto(body, client)
    except OSError:
        pass
    finally:
        peers.pop(client, None)
        conn.close()


def main() -> None:
    listen_port, fwd_addr, fwd_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", listen_port))
    peers: dict[tuple[str, int], socket.socket] = {}
    print(f"udp_shim: 127.0.0.1:{listen_port}/udp -> {fwd_addr}:{fwd_port}/tcp", flush=True)
    while True:
        data, client = udp.recvfrom(65536)
        conn = peers.get(client)
        if conn is None:
            try:
                conn = socket.create_connection((fwd_addr, fwd_port), timeout=10)
                conn.settimeout(None)
            except OSError as e:
                print(f"udp_shim: connect failed: {e}", flush=True)
                continue
            peers[client] = conn
            threading.Thread(target=back, args=(udp, conn, client, peers), daemon=True).start()
        try:
            conn.sendall(struct.pack("!H", len(data)) + data)
        except OSError:
            peers.pop(client, None)


if __name__ == "__main__":
    main()
