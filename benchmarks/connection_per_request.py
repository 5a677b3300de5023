"""Connections one after another, each as the original C++ client works: connect, one get,
read the reply, close. For counting a server's instructions per connection (callgrind, see
docs/performance.md), not for throughput: ``memlease bench --case conn-per-request`` is that.

    python benchmarks/connection_per_request.py PORT COUNT
"""

from __future__ import annotations

import socket
import sys

from memlease.core.messages import GetRequest, Granted, IdKind, LeaseRequest, SetRequest
from memlease.protocol import load_protocols


def main(port: int, count: int) -> None:
    codec = load_protocols().get("native").client_codec(1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as setup:
        setup.sendall(codec.encode_request(LeaseRequest(64, 3_600_000, IdKind.INT)))
        codec.feed(setup.recv(4096))
        granted = codec.next_reply()
        assert isinstance(granted, Granted), granted
        lease_id = granted.lease_id
        setup.sendall(codec.encode_request(SetRequest(lease_id, b"x" * 64)))
        setup.recv(4096)
    get = codec.encode_request(GetRequest(lease_id))
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(get)
            if len(sock.recv(4096)) <= 64:
                raise SystemExit("the server did not answer the get")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
