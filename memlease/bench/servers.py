"""Start and stop the servers under test: memlease itself and its peers, memcached and redis.

Each runs as a child process on free loopback ports, optionally pinned to one core.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from memlease.core.errors import MemleaseError

START_LIMIT = 20.0
OWN_GROUP = 0
"""Each server leads a process group of its own: Ctrl-C at the terminal reaches only the
bench, which stops the servers itself, and stop() ends the whole group."""
PEERS = ("memcached", "redis")


class ServerStartError(MemleaseError):
    """A server under test did not start; the message says which and why."""


@dataclass
class RunningServer:
    """A child server: its process, and the port of each protocol it speaks."""

    name: str
    process: subprocess.Popen[bytes]
    host: str
    ports: dict[str, int]

    def stop(self) -> None:
        """Stop the server's process group (it leads one of its own), SIGTERM then SIGKILL."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10.0)
        # Anything the server left in its group (a helper it forked) goes too.
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinning(cpus: list[int] | None) -> list[str]:
    """The command prefix that pins a child to ``cpus`` (empty when not pinning)."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise ServerStartError("--pin needs taskset (util-linux) on PATH")
    return [taskset, "-c", ",".join(map(str, cpus))]


def _wait_for_port(name: str, proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise ServerStartError(f"{name} exited at start (status {proc.returncode}): {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise ServerStartError(f"{name} did not listen on port {port} within {START_LIMIT:.0f}s")


def start_memlease(
    protocols: list[str],
    *,
    config: str | None = None,
    arena: str | None = None,
    cpus: list[int] | None = None,
) -> RunningServer:
    """A memlease server serving ``protocols`` on free ports (see serverproc)."""
    cmd = [*pinning(cpus), sys.executable, "-m", "memlease.bench.serverproc", *protocols]
    if config:
        cmd += ["--config", config]
    if arena:
        cmd += ["--arena", arena]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=OWN_GROUP
    )
    assert proc.stdout is not None
    with _stopped_on_failure(proc):
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=START_LIMIT)
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise ServerStartError(f"memlease server did not start: {err.strip()[-2000:]}")
        announced = json.loads(line)
    return RunningServer("memlease", proc, announced["host"], dict(announced["ports"]))


@contextmanager
def _stopped_on_failure(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Whatever ends a start early (an error, Ctrl-C, SIGTERM) ends the server's group too."""
    try:
        yield
    except BaseException:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise


def peer_installed(name: str) -> str | None:
    """The path of the peer's server binary, or None when it is not installed."""
    return shutil.which("redis-server" if name == "redis" else name)


def start_peer(name: str, *, cpus: list[int] | None = None, threads: int = 1) -> RunningServer:
    """memcached with ``threads`` worker threads, or redis-server without persistence."""
    binary = peer_installed(name)
    if binary is None:
        raise ServerStartError(f"{name} is not installed")
    port = free_port()
    if name == "memcached":
        args = [binary, "-t", str(threads), "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
        args += ["-m", "1024", "-I", "2m", "-c", "4096"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
    elif name == "redis":
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--protected-mode", "no", "--logfile", ""]
        args += ["--loglevel", "warning", "--maxclients", "4064"]
    else:
        raise ServerStartError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    proc = subprocess.Popen(
        [*pinning(cpus), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        process_group=OWN_GROUP,
    )
    with _stopped_on_failure(proc):
        _wait_for_port(name, proc, port)
    return RunningServer(name, proc, "127.0.0.1", {name: port})
