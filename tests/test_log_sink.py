"""A log sink nobody drains (a stuck log shipper, a full journald) must not freeze the server:
lines are dropped and counted off the event loop, and every client is still answered."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import memlease

SERVE = "import sys; from memlease.cli.main import main; sys.exit(main())"


def test_a_stuck_stderr_does_not_stop_the_server_answering() -> None:
    read_end, write_end = os.pipe()  # the server's stderr: read only to find the port
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--listen", "network=0", "--log-level", "debug"],
        stderr=write_end,
        stdin=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        head = b""
        deadline = time.monotonic() + 20
        while b"listening: network on" not in head or not head.endswith(b"\n"):
            assert time.monotonic() < deadline, head
            head += os.read(read_end, 4096)
        port = int(head.split(b"listening: network on 127.0.0.1:")[1].split()[0])
        # From here on nobody reads stderr. Each connection logs two lines at debug, some
        # 200 B: three times the 64 KiB a pipe holds, so the thread writing them is stuck.
        for _ in range(1000):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        started = time.monotonic()
        with memlease.Client(f"127.0.0.1:{port}", protocol="network", timeout=5.0) as client:
            assert client.stats().arena_size > 0
        assert time.monotonic() - started < 5
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        finally:
            process.kill()
            os.close(read_end)
