"""Sets and gets of 64 B on one native connection, ``DEPTH`` requests in flight at a time:
raw frames, so that the load costs little beside the server. For counting a server's
instructions per request (callgrind, see docs/performance.md), not for throughput:
``memlease bench --case pipelined`` is that. Works against ``benchmarks/echo_native.py`` too.

    python benchmarks/pipelined.py PORT BATCHES [DEPTH]
"""

from __future__ import annotations

import socket
import struct
import sys

HEADER = struct.Struct("=iq")


def main(port: int, batches: int, depth: int = 32) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEADER.pack(1, 8) + struct.pack("=ii", 64, 3_600_000))
        (lease_id,) = struct.unpack("=12xi", _exactly(sock, 16))
        value = b"v" * 64
        set_frame = HEADER.pack(3, 12 + 64) + struct.pack("=iq", lease_id, 64) + value
        get_frame = HEADER.pack(4, 4) + struct.pack("=i", lease_id)
        batch = (set_frame + get_frame) * (depth // 2)
        # A set's reply is 16 bytes, a get's 12 + 12 + 64.
        reply_size = (16 + 88) * (depth // 2)
        for _ in range(batches):
            sock.sendall(batch)
            _exactly(sock, reply_size)


def _exactly(sock: socket.socket, size: int) -> bytes:
    parts = []
    while size:
        part = sock.recv(size)
        if not part:
            raise ConnectionError("the server closed the connection")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
