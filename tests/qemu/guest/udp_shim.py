"""UDP over TCP for QEMU user networking (stdlib only; runs on the board and on the host).

slirp with ``restrict=on`` forwards TCP only: its guestfwd is TCP-only, and it drops every
UDP datagram the guest sends, so even the answers to a UDP hostfwd never leave the guest.
CoAP therefore crosses the emulator as 2-byte length-prefixed frames on TCP connections:

    udp_shim.py out LISTEN_UDP FWD_ADDR FWD_TCP  # 127.0.0.1:LISTEN_UDP datagrams -> FWD_ADDR:FWD_TCP
    udp_shim.py in LISTEN_TCP TARGET_UDP         # :LISTEN_TCP frames -> 127.0.0.1:TARGET_UDP

``out`` keeps one TCP connection per client address, so the far end sees one stable UDP
source port per client socket; answers go back to the client they belong to.

* board -> host gateway (agent case): ``out`` on the board, to a guestfwd whose host end is
  tests/qemu/fwd.py (udp mode);
* host device -> board gateway (gateway case): ``out`` on the host, to a TCP hostfwd, and
  ``in`` on the board, in front of the gateway.
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


def inbound(conn: socket.socket, target: int) -> None:
    """Frames from one TCP connection -> datagrams to 127.0.0.1:target, and the answers back."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", target))

    def answers() -> None:
        try:
            while True:
                try:
                    data = udp.recv(65536)
                except ConnectionRefusedError:  # nobody on the port yet; CoAP retransmits
                    continue
                conn.sendall(struct.pack("!H", len(data)) + data)
        except OSError:
            pass

    threading.Thread(target=answers, daemon=True).start()
    try:
        while True:
            head = read_exact(conn, 2)
            if head is None:
                break
            body = read_exact(conn, struct.unpack("!H", head)[0])
            if body is None:
                break
            udp.send(body)
    except OSError:
        pass
    finally:
        conn.close()
        udp.close()


def serve_in(listen_port: int, target: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", listen_port))
    srv.listen(16)
    print(f"udp_shim: :{listen_port}/tcp -> 127.0.0.1:{target}/udp", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=inbound, args=(conn, target), daemon=True).start()


def main() -> None:
    if sys.argv[1] == "in":
        serve_in(int(sys.argv[2]), int(sys.argv[3]))
        return
    listen_port, fwd_addr, fwd_port = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
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
