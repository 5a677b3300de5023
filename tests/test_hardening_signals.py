"""`memlease serve` and signals, numbers and the open-file limit, through the command itself
(a child process on loopback): SIGHUP reloads, SIGUSR1/SIGUSR2 are ignored, a second SIGINT
ends a shutdown at once without a traceback, a 400-digit number or a host that does not
resolve is one line and exit status 2, a low open-file limit is raised or warned about once,
and failing accepts are logged once a second, not ten times."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memlease.cli.main import main

Capture = pytest.CaptureFixture[str]

WAIT = 10.0
"""Seconds any wait on the child may take before the test fails."""

BASE = '[[listener]]\nprotocol = "network"\nport = 0\n[arena]\nsize = "64KiB"\n'


class Served:
    """``memlease serve ARGS`` in a child process, its stderr collected line by line."""

    def __init__(self, *args: str, preexec_fn: Callable[[], None] | None = None) -> None:
        command = [sys.executable, "-m", "memlease.cli.main", "serve", *args]
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def wait_for(self, pattern: str, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` on matching ``pattern``."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if found := re.search(pattern, line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or self.lines[-1:] == [""]:
                    raise AssertionError(f"no line matching {pattern!r}: {self.lines}")
                self._changed.wait(left)

    def port(self) -> int:
        return int(self.wait_for(r"listening: network on 127\.0\.0\.1:(\d+)").group(1))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def status(self) -> int:
        status = self.process.wait(timeout=WAIT)
        self._reader.join(WAIT)
        return status

    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str, preexec_fn: Callable[[], None] | None = None) -> Served:
        served = Served(*args, preexec_fn=preexec_fn)
        started.append(served)
        return served

    yield start
    for served in started:
        served.process.kill()
        served.process.wait(WAIT)


def _stats(port: int) -> int:
    return main(["--server", f"127.0.0.1:{port}", "--protocol", "network", "stats"])


# ---------------------------------------------------------------- signals


def test_sighup_reloads_the_log_level_from_the_config_file_and_says_what_it_did(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(BASE)
    server = serve("--config", str(config))
    port = server.port()
    config.write_text('log_level = "debug"\n' + BASE + '[limits]\nidle_timeout = "1m"\n')
    server.signal(signal.SIGHUP)
    reloaded = server.wait_for(r"SIGHUP: reloaded: (.*)").group(1)
    assert "log_level = 'debug' (was 'info')" in reloaded
    assert "limits.idle_timeout = 60s (was 300s)" in reloaded
    assert _stats(port) == 0
    # at debug now: connections opening are logged
    server.wait_for(r"network connection opened")
    server.signal(signal.SIGTERM)
    assert server.status() == 0
    assert "Traceback" not in server.output()


def test_sighup_with_a_broken_file_keeps_the_running_configuration(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(BASE)
    server = serve("--config", str(config))
    port = server.port()
    config.write_text(BASE + '[limits]\nidle_timeout = "soon"\n')
    server.signal(signal.SIGHUP)
    server.wait_for(r"ERROR SIGHUP: configuration not reloaded.*idle_timeout = 'soon'")
    config.write_text(BASE.replace("64KiB", "1MiB"))
    mark = len(server.lines)
    server.signal(signal.SIGHUP)
    server.wait_for(r"SIGHUP: reloaded: no change to apply", after=mark)
    server.wait_for(r"WARNING SIGHUP: arena\.size changed, which takes a restart", after=mark)
    assert _stats(port) == 0
    server.signal(signal.SIGINT)
    assert server.status() == 0


def test_sigusr1_and_sigusr2_are_logged_and_ignored(serve: Callable[..., Served]) -> None:
    server = serve("--listen", "network=0", "--arena", "64KiB")
    port = server.port()
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        server.signal(signum)
        server.wait_for(rf"{signal.Signals(signum).name} received: ignored")
    assert _stats(port) == 0
    server.signal(signal.SIGTERM)
    assert server.status() == 0


def test_a_second_sigint_during_the_grace_ends_at_once_without_a_traceback(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(BASE + '[limits]\nshutdown_grace = "60s"\nrequest_timeout = "60s"\n')
    server = serve("--config", str(config))
    port = server.port()
    with socket.create_connection(("127.0.0.1", port)) as half_sent:
        half_sent.sendall(b"\x01\x05")  # the start of a network header: the grace is its
        time.sleep(0.2)  # let the server read it
        server.signal(signal.SIGINT)
        server.wait_for(r"shutting down: 1 connection\(s\) finishing")
        with pytest.raises(subprocess.TimeoutExpired):
            server.process.wait(timeout=0.5)  # waiting out the grace for the message
        started = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.status() == 128 + signal.SIGINT
        assert time.monotonic() - started < 3
    server.wait_for(r"WARNING SIGINT received again: stopping now, cutting 1 connection")
    assert "Traceback" not in server.output()
    assert "ExceptionGroup" not in server.output()


# ---------------------------------------------------------------- numbers and names

HUGE = "1" + "0" * 400


@pytest.fixture
def never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() runs in the test's process: a configuration let through must not serve."""

    def run(*args: object) -> int:
        raise AssertionError("the configuration was accepted: the server would start")

    monkeypatch.setattr("memlease.server.run.run", run)


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--arena", HUGE, "too large"),
        ("--max-message", HUGE, "too large"),
        ("--max-ttl", HUGE + "s", "too long"),
        ("--max-connections", HUGE, "too large"),
        ("--request-timeout", HUGE + "ms", "too long"),
    ],
)
@pytest.mark.usefixtures("never_serves")
def test_a_400_digit_number_is_one_line_and_exit_2(
    flag: str, value: str, reason: str, capsys: Capture
) -> None:
    assert main(["serve", "--listen", "network=0", flag, value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"memlease: {flag} = ") and reason in err, err


@pytest.mark.parametrize(
    ("table", "line", "reason"),
    [
        ("arena", f"size = {HUGE}", "too large"),
        ("arena", f'size = "{HUGE}KiB"', "too large"),
        ("limits", f"max_message = {HUGE}", "too large"),
        ("limits", f'max_ttl = "{HUGE}s"', "too long"),
        ("limits", f'idle_timeout = "{HUGE}h"', "too long"),
        ("limits", f"max_connections = {HUGE}", "too large"),
    ],
)
@pytest.mark.usefixtures("never_serves")
def test_a_400_digit_number_in_the_config_file_is_one_line_and_exit_2(
    table: str, line: str, reason: str, capsys: Capture, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[[listener]]\nprotocol = "network"\nport = 0\n[{table}]\n{line}\n')
    assert main(["serve", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    key = line.split(" ")[0]
    assert f"{table}.{key} = " in err and reason in err, err


def test_a_host_that_does_not_resolve_is_named_as_such(
    capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not never_serves: before the fix, this failed in the server, binding.
    real = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host == "nosuchhost":  # no DNS in the test: what glibc says for such a name
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert main(["serve", "--host", "nosuchhost"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert "Unknown error" not in err
    assert err.strip() == (
        "memlease: --host = 'nosuchhost': cannot resolve it: Name or service not known"
    )


# ---------------------------------------------------------------- the open-file limit


def _open_files_limit(soft: int, hard: int) -> Callable[[], None]:
    def set_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return set_limit


def _soft_limit_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/PID/limits"
)


@linux_only
def test_a_low_soft_open_file_limit_is_raised_to_the_hard_one(
    serve: Callable[..., Served],
) -> None:
    server = serve("--listen", "network=0", preexec_fn=_open_files_limit(256, 4096))
    server.port()
    assert _soft_limit_of(server.process.pid) == 4096
    assert "open files" not in server.output()
    server.signal(signal.SIGTERM)
    assert server.status() == 0


@linux_only
def test_an_open_file_limit_still_too_low_is_warned_about_once_and_accept_failures_once_a_second(
    serve: Callable[..., Served],
) -> None:
    # 48 files: the server runs out of them with some 30 connections open.
    server = serve(
        "--listen",
        "network=0",
        "--max-connections",
        "1000",
        preexec_fn=_open_files_limit(48, 48),
    )
    port = server.port()
    warning = server.wait_for(r"WARNING open files: the limit is (\d+) \(hard limit (\d+)\)")
    assert warning.groups() == ("48", "48")
    clients = []
    try:
        for _ in range(60):  # the kernel completes them all; the server cannot take them all
            clients.append(socket.create_connection(("127.0.0.1", port)))
        server.wait_for(r"cannot accept on \d+: Too many open files")
        time.sleep(2.5)  # some 25 retries
        failures = [line for line in server.lines if "cannot accept" in line]
        assert 2 <= len(failures) <= 4, failures
        assert re.search(r"\(\d+ more like it left out\)", failures[-1]), failures
    finally:
        for client in clients:
            client.close()
    server.signal(signal.SIGTERM)
    assert server.status() == 0
    assert len([line for line in server.lines if "WARNING open files" in line]) == 1
    assert "Traceback" not in server.output()
