"""memlease servers in child processes, for tests that kill, stop and restart them: each
logs to its own file, from which its port is read (it listens on port 0 the first time and
on that same port after a restart)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LISTENING = re.compile(r"listening: (\w+) on (\S+):(\d+)")
START_TIMEOUT = 15.0


class ServerProcess:
    """``memlease serve`` for one protocol on ``host``; ``prefix``: a command to run it under
    (e.g. ``ip netns exec NAME``)."""

    def __init__(
        self,
        protocol: str = "uuid",
        *,
        host: str = "127.0.0.1",
        arena: str = "1MiB",
        prefix: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> None:
        self.protocol = protocol
        self.host = host
        self.port = 0
        self.arena = arena
        self.prefix = prefix
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="memlease-test-", suffix=".log")[1])

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> ServerProcess:
        command = [
            *self.prefix,
            sys.executable,
            "-m",
            "memlease.cli.main",
            "serve",
            "--host",
            self.host,
            "--listen",
            f"{self.protocol}={self.port}",
            "--arena",
            self.arena,
            *self.extra,
        ]
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = _LISTENING.search(self._log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(3))
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited at start: {self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"the server did not listen within {START_TIMEOUT} s: {self.log()}")

    def log(self) -> str:
        return self._log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: gone at once, its leases with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the connections stay open and nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> ServerProcess:
        self.kill()
        return self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.kill()
        self._log.unlink(missing_ok=True)
