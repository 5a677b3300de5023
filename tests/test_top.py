"""``memlease top``: rates from two stats replies, the screen it draws, and the live view on a
real terminal (tmux) while load runs against a server in a child process."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from rich.console import Console
from server_processes import ServerProcess

from memlease.cli.top import rates, render, run_top
from memlease.client.blocking import Client
from memlease.core.messages import OPS, ServerStats


def _stats(uptime_ms: int, **counts: int) -> ServerStats:
    requests = tuple(counts.get(op.value, 0) for op in OPS)
    return ServerStats(
        arena_size=1 << 20, used=1 << 18, free=3 << 18, largest_free=1 << 19,
        internal_fragmentation=1000, external_fragmentation=0.25, live_leases=42,
        granted=counts.get("granted", 0), expired=counts.get("expired", 0), released=0,
        refused=0, connections=3, uptime_ms=uptime_ms, version="1.2.3",
        hits=counts.get("hits", 0), misses=counts.get("misses", 0), requests=requests,
        expiry_lag_us=counts.get("lag_us", 0), expiry_behind_us=counts.get("behind_us", 0),
    )  # fmt: skip


def test_rates_are_the_change_per_second_of_server_time() -> None:
    before = _stats(10_000, get=100, set=10, granted=5, expired=1, hits=90, misses=10)
    after = _stats(12_000, get=2100, set=410, granted=25, expired=41, hits=1990, misses=110)
    change = rates(before, after, fallback_seconds=99.0)
    assert change.seconds == 2.0
    assert change.requests["get"] == 1000.0 and change.requests["set"] == 200.0
    assert change.total == 1200.0
    assert (change.granted, change.expired, change.hits, change.misses) == (10, 20, 950, 50)


def test_expiry_lag_is_the_mean_over_the_leases_expired_in_between() -> None:
    before = _stats(10_000, expired=10, lag_us=20_000)
    after = _stats(11_000, expired=50, lag_us=20_000 + 40 * 1500, behind_us=2500)
    change = rates(before, after, fallback_seconds=1.0)
    assert change.expiry_lag_ms == 1.5
    text = _text(render("h:1", "native", after, change))
    assert re.search(r"expiry lag\s+mean 1.50 ms\s+behind 2.50 ms", text), text
    quiet = rates(after, _stats(12_000, expired=50, lag_us=80_000), fallback_seconds=1.0)
    assert quiet.expiry_lag_ms is None  # none expired: no mean to show
    assert re.search(r"expiry lag\s+mean -", _text(render("h:1", "native", after, quiet)))


def test_a_restarted_server_gives_no_negative_rates() -> None:
    change = rates(_stats(50_000, get=900), _stats(1_000, get=10), fallback_seconds=1.0)
    assert change.seconds == 1.0 and change.requests["get"] == 0.0


def _text(screen: object, width: int = 110) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(screen)
    return console.export_text()


def test_the_screen_shows_ops_per_second_leases_arena_and_connections() -> None:
    before = _stats(10_000, get=100, stats=1, expired=0)
    after = _stats(11_000, get=1334, stats=2, expired=7)
    text = _text(render("127.0.0.1:7071", "network", after, rates(before, after, 1.0)))
    assert "127.0.0.1:7071 (network)  version 1.2.3  up 11s" in text
    assert "42 live" in text and "expired 7/s" in text
    assert "used 256 KiB of 1 MiB (25.0%)" in text and "largest free block 512 KiB" in text
    assert "external 0.250" in text
    assert "3 open" in text
    assert re.search(r"get\s+1,234\s+1,334", text), text
    assert re.search(r"stats\s+1\s+2", text), text
    assert not re.search(r"^\s*lease\s", text, re.M)  # an op never asked for is left out


def test_top_with_a_count_prints_that_many_screens_when_not_on_a_terminal() -> None:
    replies = iter([_stats(1000 * i, get=100 * i) for i in range(1, 5)])
    out = io.StringIO()
    run_top(
        lambda: next(replies), "host:1", "native", count=3, console=Console(file=out, width=100),
        sleep=lambda seconds: None,
    )  # fmt: skip
    screens = out.getvalue().split("memlease top")[1:]
    assert len(screens) == 3
    for n, screen in enumerate(screens, start=2):  # 100 gets a second, 100 more each time
        assert re.search(rf"^\s*get\s+100\s+{100 * n}\s*$", screen, re.M), screen


# ---------------------------------------------------------------- on a terminal, under load


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = ServerProcess("network", arena="4MiB").start()
    try:
        yield process
    finally:
        process.close()


def _load(address: str, stop: threading.Event) -> None:
    """Leases, gets and sets against the server until ``stop`` (or 30 s at most)."""
    host, port = address.rsplit(":", 1)
    with Client((host, int(port)), "network", timeout=5.0) as client:
        lease_id = client.lease(64, 60_000).lease_id
        until = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < until:
            client.set(lease_id, b"x" * 64)
            client.get(lease_id)


def _gets_total(screen: str) -> int:
    found = re.search(r"^\s*get\s+[\d,]+\s+([\d,]+)\s*$", screen, re.M)
    assert found, screen
    return int(found.group(1).replace(",", ""))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_top_on_a_terminal_follows_load_and_ctrl_c_exits_0(server: ServerProcess) -> None:
    session = f"memlease-top-{os.getpid()}"
    command = (
        f"{sys.executable} -m memlease.cli.main --server {server.address} --protocol network "
        'top --interval 500ms; echo "top exited $?"; sleep 30'
    )
    stop = threading.Event()
    load = threading.Thread(target=_load, args=(server.address, stop), daemon=True)
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "30", command], check=True
    )
    try:
        load.start()

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip

        def wait_for(check: str, seconds: float = 15.0) -> str:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                shown = screen()
                if re.search(check, shown, re.M):
                    return shown
                time.sleep(0.2)
            raise AssertionError(f"{check!r} not on screen:\n{shown}")

        first = wait_for(r"^\s*get\s+[\d,]+\s+[\d,]+")
        time.sleep(1.1)  # two more refreshes
        second = wait_for(r"^\s*get\s+[\d,]+\s+[\d,]+")
        assert _gets_total(second) > _gets_total(first), (first, second)
        assert re.search(r"^\s*get\s+[1-9][\d,]*\s", second, re.M), second  # ops/s under load
        assert "1 live" in second and "memlease top" in second
        stop.set()
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        ended = wait_for(r"top exited \d+")
        assert "top exited 0" in ended, ended
        assert "Traceback" not in ended and "KeyboardInterrupt" not in ended, ended
    finally:
        stop.set()
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
        load.join(10)


def test_uptime_reads_as_days_hours_minutes_seconds() -> None:
    from memlease.units import format_duration

    assert [format_duration(ms) for ms in (0, 999, 1000, 61_000, 3_723_500, 90_061_000)] == [
        "0ms", "999ms", "1s", "1m 1s", "1h 2m 3s", "1d 1h 1m 1s",
    ]  # fmt: skip
