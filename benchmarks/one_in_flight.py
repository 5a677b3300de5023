"""Sets and gets of 64 B on one native connection, one request in flight. For counting a
server's instructions per request (callgrind, see docs/performance.md, "Sixth round"), not
for throughput: ``memlease bench --case one-in-flight`` is that.

    python benchmarks/one_in_flight.py PORT PAIRS
"""

from __future__ import annotations

import sys

from memlease import Client


def main(port: int, pairs: int) -> None:
    with Client(("127.0.0.1", port), "native", timeout=60) as client:
        lease_id = client.lease(64, 3_600_000).lease_id
        value = b"v" * 64
        for _ in range(pairs):
            client.set(lease_id, value)
            client.get(lease_id)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
