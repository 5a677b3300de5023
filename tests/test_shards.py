"""``memlease serve --shards N``: N server processes under a supervisor, each with 1/N of the
arena on consecutive ports, pinned to a core each where there are enough; a shard that dies
is restarted on its ports; SIGINT stops them all, each with its drain, and exits 0."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlease import ConfigError, Fleet, LeaseNotFound, ServerUnavailable
from memlease.server.config import Config, load_config
from memlease.server.config_values import Listener
from memlease.server.sharding import cores_for, shard_configs


def test_each_shard_has_its_share_of_the_arena_and_the_next_ports() -> None:
    config = Config(
        arena_size=96 * 1024 * 1024,
        listeners=(Listener("native", 7411), Listener("uuid", 7500), Listener("network", 0)),
        shards=3,
    )
    shards = shard_configs(config)
    assert [s.arena_size for s in shards] == [32 * 1024 * 1024] * 3
    assert [[listener.port for listener in s.listeners] for s in shards] == [
        [7411, 7500, 0],
        [7412, 7501, 0],
        [7413, 7502, 0],
    ]
    assert all(s.shards == 1 for s in shards)


def test_shards_that_would_share_a_port_are_refused_saying_how_to_space_them() -> None:
    with pytest.raises(ConfigError, match="space the listeners' ports at least 2 apart"):
        load_config(None, {"shards": "2"})  # the defaults: 7411, 7412, 7413
    with pytest.raises(ConfigError, match="leaves no block"):
        load_config(None, {"shards": "3", "arena_size": "64B", "listeners": ["uuid=0"]})
    with pytest.raises(ConfigError, match="--shards = '0': use 1 to 256"):
        load_config(None, {"shards": "0"})
    assert load_config(None, {"shards": "2", "listeners": ["uuid=7413"]}).shards == 2


def test_shards_are_pinned_to_their_own_cores_only_when_there_are_enough() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert cores_for(len(cores)) == [{core} for core in cores]
    assert cores_for(len(cores) + 1) == [None] * (len(cores) + 1)


def _wait_for(path: Path, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} within {timeout} s in:\n{path.read_text()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_shards_restart_a_dead_one_pass_sighup_on_and_stop_with_sigint(tmp_path: Path) -> None:
    stderr, stdout = tmp_path / "stderr", tmp_path / "stdout"
    command = [sys.executable, "-m", "memlease.cli.main", "serve", "--shards", "2",
               "--listen", "uuid=0", "--arena", "2MiB"]  # fmt: skip
    with stderr.open("wb") as err, stdout.open("wb") as out:
        supervisor = subprocess.Popen(command, stdout=out, stderr=err)
    pids: list[int] = []
    try:
        servers = _wait_for(stdout, r"uuid=(\S+)\n").group(1).split(",")
        assert len(servers) == 2
        pids = [int(_wait_for(stderr, rf"shard {i} \(pid (\d+)\)").group(1)) for i in (0, 1)]
        if len(os.sched_getaffinity(0)) >= 2:
            allowed = [Path(f"/proc/{pid}/status").read_text() for pid in pids]
            pinned = [re.findall(r"Cpus_allowed_list:\s*(\S+)", text) for text in allowed]
            assert pinned == [[str(core)] for core in sorted(os.sched_getaffinity(0))[:2]]
        with Fleet(servers, dead_timeout=0.2) as fleet:
            figures = fleet.stats()
            assert [f.arena_size for f in figures.values()] == [1024 * 1024] * 2  # type: ignore[union-attr]
            handles = [fleet.lease(1024, 60_000) for _ in range(20)]
            assert {f"{h.server[0]}:{h.server[1]}" for h in handles} == set(servers)
            on_second = next(h for h in handles if f"{h.server[0]}:{h.server[1]}" == servers[1])

            os.kill(pids[1], signal.SIGKILL)
            _wait_for(stderr, rf"shard 1 \(pid {pids[1]}\) exited with status -9: its leases")
            found = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and found is None:
                matches = re.findall(r"shard 1 \(pid (\d+)\) listening", stderr.read_text())
                found = next((int(p) for p in matches if int(p) != pids[1]), None)
                time.sleep(0.05)
            assert found is not None, stderr.read_text()
            pids.append(found)
            result = None
            for _ in range(100):  # the back-off ends; the restarted shard answers on its port
                try:
                    fleet.get(on_second)
                except LeaseNotFound:
                    result = "gone"
                    break
                except ServerUnavailable:
                    time.sleep(0.05)
            assert result == "gone"  # the same address, a new server: the old lease died

        supervisor.send_signal(signal.SIGHUP)  # passed on: each shard reloads its share
        deadline = time.monotonic() + 10
        while stderr.read_text().count("SIGHUP: reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stderr.read_text().count("SIGHUP: reloaded") == 2, stderr.read_text()

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(20) == 0
        log = stderr.read_text()
        assert log.count("SIGTERM received: stopping") == 2  # each shard drained, once
        assert "stopped" in log.splitlines()[-1]
        assert not any(_alive(pid) for pid in (pids[0], pids[2]))
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# Loopback, but not the 127.0.0.1 of every other test's connections: those leave thousands
# of ports in TIME_WAIT (a port no listener may take for a minute), on 127.0.0.1 only.
QUIET_HOST = "127.0.0.3"


def test_a_shard_that_cannot_listen_stops_them_all_with_its_reason() -> None:
    with _taken_port_after_a_free_one() as port:
        serve = ["serve", "--shards", "2", "--host", QUIET_HOST, "--listen", f"uuid={port - 1}"]
        serve += ["--log-level", "error"]
        done = subprocess.run(
            [sys.executable, "-m", "memlease.cli.main", *serve],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (done.returncode, done.stdout) == (2, "")
    assert f"memlease serve: shard 1: cannot listen for uuid on {QUIET_HOST}:{port}" in done.stderr


@contextlib.contextmanager
def _taken_port_after_a_free_one() -> Iterator[int]:
    """A port this holds, whose port - 1 was free a moment ago (other tests use ports too)."""
    for _ in range(50):
        with socket.socket() as taken:
            taken.bind((QUIET_HOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            with socket.socket() as probe:
                try:
                    probe.bind((QUIET_HOST, port - 1))
                except OSError:
                    continue
            yield port
            return
    raise AssertionError("no free port below a taken one in 50 tries")
