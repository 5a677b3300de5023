"""``memlease bench`` as a user runs it: bad arguments are one line and exit 2 before anything
starts; Ctrl-C and SIGTERM stop every server and load process it started; it releases the
leases it took from a server it was pointed at."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import StartServer
from trio.testing import MockClock

from memlease.bench.workload import RUN_SLACK, SETUP_LIMIT, Workload
from memlease.cli.main import main

Capture = pytest.CaptureFixture[str]
BENCH = [sys.executable, "-m", "memlease.cli.main", "bench", "--no-progress"]
PEERS = [
    name
    for name, binary in (("memcached", "memcached"), ("redis", "redis-server"))
    if shutil.which(binary)
]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--duration", "2"], "argument --duration: '2': a duration needs a unit"),
        (["--warmup", "1"], "argument --warmup: '1': a duration needs a unit"),
        (["--lease-ttl", "5"], "argument --lease-ttl: '5': a duration needs a unit"),
        (["--value-size", "64MB"], "argument --value-size: '64MB': bad size unit 'MB'"),
        (["--arena", "64MB"], "--arena = '64MB': bad size unit 'MB'"),
        (["--config", "/missing.toml"], "config /missing.toml: cannot read it"),
        (["--protocol", "foo"], "--protocol 'foo': unknown protocol (known: "),
        (["--duration", "0s"], "argument --duration: '0s': must be more than 0s"),
        (["--workers", "-1"], "argument --workers: '-1': must be at least 0"),
        (["-c", "0"], "argument --connections/-c: '0': must be at least 1"),
        (["--repeat", "0"], "argument --repeat: '0': must be at least 1"),
        (["--conn-per-request", "-d", "4"], "connection-per-request mode sends one request"),
        (["--server", "127.0.0.1:1", "--arena", "1MiB"], "--config and --arena are for"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_anything_starts(
    capsys: Capture, argv: list[str], says: str
) -> None:
    started = time.monotonic()
    assert main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("memlease bench: ") and says in err, err
    assert time.monotonic() - started < 5  # nothing was started and waited for


def test_help_shows_defaults_without_internal_jargon(capsys: Capture) -> None:
    assert main(["bench", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 5s)" in text and "(default: 500ms)" in text and "(default: 64)" in text
    assert "judged" not in text


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _names(pids: set[int]) -> list[str]:
    names = []
    for pid in pids:
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return names


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _start_bench(extra: list[str], *, into_run: bool) -> tuple[subprocess.Popen[str], set[int]]:
    """A bench in a session of its own (as a shell job), once its servers run and its load
    processes are starting (``into_run``: past setup, into the run)."""
    command = [*BENCH, "--duration", "60s", "--warmup", "0s", "-c", "2", "--workers", "2"]
    proc = subprocess.Popen(
        [*command, *extra],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As at a terminal: a test run started in the background (nohup ... &) ignores
        # SIGINT, and a child would inherit that and never see the Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    want_servers = 1 + len(PEERS)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = _descendants(proc.pid)
        names = _names(children)
        servers = [n for n in names if "serverproc" in n or "memcached" in n or "redis" in n]
        load = [n for n in names if "multiprocessing" in n and "resource_tracker" not in n]
        if len(servers) == want_servers and load and (len(load) == 2 or not into_run):
            if into_run:
                time.sleep(0.5)  # past setup
            return proc, _descendants(proc.pid)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the bench did not start its servers and load within 30 s")


def _assert_all_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + 15
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids), _names(_alive(pids))


@pytest.mark.parametrize("into_run", [False, True], ids=["during-setup", "during-run"])
@pytest.mark.parametrize(
    ("send", "status", "says"),
    [
        # kill -TERM PID, as the issue did: to the bench alone.
        (lambda p: os.kill(p.pid, signal.SIGTERM), 143, "terminated"),
        # Ctrl-C at a terminal: SIGINT to the whole foreground process group.
        (lambda p: os.killpg(p.pid, signal.SIGINT), 130, "interrupted"),
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_sigterm_and_ctrl_c_stop_every_server_and_load_process(
    send: object, status: int, says: str, into_run: bool
) -> None:
    compare = ["--compare", ",".join(PEERS)] if PEERS else []
    proc, children = _start_bench(compare, into_run=into_run)
    try:
        send(proc)  # type: ignore[operator]
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        for pid in _alive(children):  # a failed test leaves no server behind either
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == status, err
    assert err == f"memlease bench: {says}; servers and load stopped\n"
    _assert_all_gone(children)


def test_the_value_leases_live_just_beyond_the_run() -> None:
    w = Workload(duration=5.0, warmup=0.5)
    assert w.value_ttl_ms == round((SETUP_LIMIT + 5.5 + RUN_SLACK) * 1000)
    assert w.value_ttl_ms < 3_600_000


async def test_bench_against_a_server_releases_its_value_leases(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    server = await start_server("network", arena_size=4 * 1024 * 1024)
    host, port = server.address("network")
    where = ["--server", f"{host}:{port}", "--protocol", "network"]
    load = ["-c", "3", "--value-size", "1MiB", "--mix", "get,set", "--workers", "1"]

    def run_bench() -> subprocess.CompletedProcess[str]:
        command = [*BENCH, *where, *load, "--duration", "300ms", "--warmup", "0s"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    done = await trio.to_thread.run_sync(run_bench)
    assert done.returncode in (0, 1), done.stderr  # 1: a late reply counted, on a loaded machine

    async with await server.connect("network") as client:
        figures = await client.stats()
        assert (figures.live_leases, figures.used) == (0, 0)
        granted = await client.lease(4 * 1024 * 1024, ttl_ms=1000)  # the whole arena is free
        await client.release(granted.lease_id)


async def test_a_terminated_bench_still_releases_its_value_leases(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    server = await start_server("network", arena_size=4 * 1024 * 1024)
    host, port = server.address("network")
    command = [
        *BENCH,
        *("--server", f"{host}:{port}", "--protocol", "network", "-c", "2", "--workers", "1"),
        *("--value-size", "1MiB", "--duration", "60s", "--warmup", "0s"),
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        async with await server.connect("network") as client:
            with trio.fail_after(30):  # wall-clock bound: the mock clock does not advance
                while (await client.stats()).live_leases < 2:
                    await trio.to_thread.run_sync(partial(time.sleep, 0.05))
            proc.send_signal(signal.SIGTERM)
            status = await trio.to_thread.run_sync(partial(proc.wait, 30))
            assert status == 143
            figures = await client.stats()
            assert (figures.live_leases, figures.used) == (0, 0)
    finally:
        proc.kill()


def test_the_table_fits_80_columns_and_the_report_gives_the_load(tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    compare = ["--compare", PEERS[0]] if PEERS else []
    command = [*BENCH, "--case", "conn-per-request", "--duration", "300ms", "--warmup", "0s"]
    done = subprocess.run(
        [*command, *compare, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    # 1: a run counted errors (a reply later than 5 s on a loaded machine); the table stands.
    assert done.returncode in (0, 1), done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 80, done.stdout
    assert "…" not in done.stdout
    assert "memlease bench (one run per target)" in lines[0]
    words = [line.split() for line in lines]
    # Table rows; not the error lines under it ("conn-per-request memlease/native: 2 x ...").
    rows = [w for w in words if w[:1] == ["conn-per-request"] and not w[1].endswith(":")]
    assert [row[1] for row in rows] == ["memlease/native", *PEERS[:1]]
    assert "goal" not in done.stdout and "median" not in done.stdout
    load = "a connection per request, 4 connections x depth 1, 64 B values, get:set 1:1"
    assert f"conn-per-request: {load}, 0.3 s after 0 s warmup" in " ".join(done.stdout.split())
    text = report.read_text()
    assert f"| conn-per-request | {load}, 0.3 s after 0 s warmup |" in text
    assert text.startswith("# memlease bench (one run per target)")
    assert len(rows[0]) == 7  # no ratio (and no goal) on memlease's own row
    if PEERS:
        assert float(rows[1][-1]) > 0  # the ratio
    if report.with_suffix(".png").exists():
        assert "![latency by percentile](bench.png)" in text
