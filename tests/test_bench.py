"""memlease bench: short real runs against a server it starts, and its pure parts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memlease.bench.__main__ import main as bench_main
from memlease.bench.command import rotated
from memlease.bench.histogram import SUB_COUNT, LatencyHistogram, bucket_low, bucket_of
from memlease.bench.runner import split_connections
from memlease.bench.servers import start_memlease
from memlease.bench.storm import StormTiming, run_storm, storm_case
from memlease.bench.workload import TargetSpec, Workload, parse_mix
from memlease.core.errors import ConfigError

SHORT = ["--duration", "300ms", "--warmup", "100ms", "--no-progress"]


def bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memlease.bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bench_json(*args: str, status: int = 0) -> dict[str, Any]:
    done = bench(*args, "--json")
    assert done.returncode == status, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---------------------------------------------------------------- pure parts


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**44))
def test_bucket_holds_its_value_within_two_percent(value: int) -> None:
    index = bucket_of(value)
    assert bucket_low(index) <= value < bucket_low(index + 1)
    assert bucket_low(index + 1) - bucket_low(index) <= max(1, value / (SUB_COUNT - 1))


def test_percentiles_of_a_known_distribution() -> None:
    hist = LatencyHistogram()
    for micros in range(1, 1001):
        hist.record(micros * 1000)
    assert hist.total == 1000
    assert hist.percentile(50) == pytest.approx(500_000, rel=0.02)
    assert hist.percentile(99) == pytest.approx(990_000, rel=0.02)
    assert hist.percentile(99.9) == pytest.approx(999_000, rel=0.02)
    assert LatencyHistogram().percentile(99) == 0.0


def test_mix_parsing_and_its_errors() -> None:
    assert parse_mix("get=9, set=1,read") == (("get", 9), ("set", 1), ("read", 1))
    with pytest.raises(ConfigError, match="unknown op 'delete'"):
        parse_mix("get,delete")
    with pytest.raises(ConfigError, match="not a whole number"):
        parse_mix("get=x")
    with pytest.raises(ConfigError, match="one request per connection"):
        Workload(depth=4, conn_per_request=True)


def test_each_repeat_starts_with_the_next_target() -> None:
    targets = ["memlease", "memcached", "redis"]
    orders = [rotated(targets, repeat) for repeat in range(4)]
    assert orders == [
        ["memlease", "memcached", "redis"],
        ["memcached", "redis", "memlease"],
        ["redis", "memlease", "memcached"],
        ["memlease", "memcached", "redis"],
    ]
    assert rotated([], 2) == []


def test_connections_are_dealt_to_workers_without_an_idle_worker() -> None:
    assert split_connections(5, 2) == [[0, 2, 4], [1, 3]]
    assert split_connections(1, 4) == [[0]]


# ---------------------------------------------------------------- real runs


def test_every_op_over_native_pipelined_with_a_report(tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    mix = ["--mix", "get,set,read,write,lease", "-c", "3", "-d", "4", "--workers", "2"]
    out = bench_json(*SHORT, *mix, "--arena", "4MiB", "--report", str(report))
    assert out["machine"]["cores"] >= 1
    (case,) = out["cases"]
    assert case["name"] == "custom"
    assert case["workload"]["depth"] == 4
    target = case["targets"]["memlease/native"]
    assert target["status"] == "ok"
    median = target["median"]
    assert median["ops"] > 0 and median["ops_per_s"] > 0
    assert median["errors"] == 0, median["error_kinds"]
    assert set(median["op_counts"]) == {"get", "set", "read", "write", "lease"}
    assert 0 < median["p50_ms"] <= median["p99_ms"] <= median["p999_ms"]
    text = report.read_text()
    assert "| custom | memlease/native |" in text
    if _has_matplotlib():
        assert (tmp_path / "bench.png").stat().st_size > 1000
        assert "![latency by percentile](bench.png)" in text


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_connection_per_request_over_uuid_prints_the_table() -> None:
    done = bench(*SHORT, "--protocol", "uuid", "--conn-per-request", "-c", "2")
    assert done.returncode == 0, done.stderr  # status 1 would mean a reported error
    row = next(line for line in done.stdout.splitlines() if "memlease/uuid" in line)
    cells = row.split()
    assert cells[:2] == ["custom", "memlease/uuid"]
    assert int(cells[2].replace(",", "")) > 0  # ops/s
    assert cells[6] == "0"  # errors


def test_a_wrong_expected_value_is_reported_as_a_mismatch() -> None:
    out = bench_json(*SHORT, "--mix", "get", "-c", "1", "--tamper-expected", status=1)
    median = out["cases"][0]["targets"]["memlease/native"]["median"]
    assert median["errors"] > 0
    assert set(median["error_kinds"]) == {"get: data mismatch (not what was set)"}


def test_a_bad_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main([*SHORT, "--mix", "get,delete"]) == 2
    assert capsys.readouterr().err.strip() == (
        "memlease bench: argument --mix: unknown op 'delete' in --mix "
        "(known: get, set, read, write, lease) (see memlease bench --help)"
    )
    assert bench_main([*SHORT, "--compare", "mysql"]) == 2
    assert "unknown peer 'mysql'" in capsys.readouterr().err
    assert bench_main([*SHORT, "--server", "nowhere"]) == 2
    assert "'nowhere' is not HOST:PORT" in capsys.readouterr().err


def test_an_expiry_storm_is_measured_apart() -> None:
    leases = 6000
    case = storm_case(leases, warmup=0.1)
    server = start_memlease(["native"])
    try:
        spec = TargetSpec("memlease", server.host, server.ports["native"])
        timing = StormTiming(lead=0.5, after=1.0, window=0.5, spawn=1.5)
        whole, window, notes = run_storm(
            spec, case, leases, workers=1, load_cpus=None, timing=timing
        )
    finally:
        server.stop()
    assert notes["leases_granted"] == leases
    assert notes["live_leases_before"] == leases
    assert notes["expired_during_run"] == leases
    assert notes["seconds_until_99pct_expired"] is not None
    assert whole.ops > 0 and whole.error_count == 0, whole.errors
    assert 0 < window.ops < whole.ops
    assert window.histogram.total > 0


@pytest.mark.skipif(
    shutil.which("memcached") is None or shutil.which("redis-server") is None,
    reason="memcached or redis-server is not installed, so the peer drivers cannot run",
)
def test_compare_with_memcached_and_redis_gives_ratios() -> None:
    out = bench_json(
        *SHORT, "-c", "2", "--mix", "get,set,read,write", "--compare", "memcached,redis"
    )
    case = out["cases"][0]
    for peer in ("memcached", "redis"):
        median = case["targets"][peer]["median"]
        assert median["ops"] > 0
        assert median["errors"] == 0, median["error_kinds"]
        assert case["ratios"][peer] > 0


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(0, 5), min_size=2, max_size=5).filter(lambda ws: sum(ws) > 0),
    depth=st.integers(1, 40),
    sizes=st.lists(st.integers(16, 1 << 20), min_size=5, max_size=5),
    seed=st.integers(0, 1000),
)
def test_a_connection_s_cycle_of_batches_holds_the_mix_exactly(
    weights: list[int], depth: int, sizes: list[int], seed: int
) -> None:
    import random
    from collections import Counter

    from memlease.bench.targets import OpTemplate
    from memlease.bench.worker import make_batches

    names = ["get", "set", "read", "write", "lease"][: len(weights)]
    templates = {
        name: OpTemplate(name, bytes(size), None)  # type: ignore[arg-type]
        for name, size in zip(names, sizes, strict=False)
    }
    workload = Workload(mix=tuple(zip(names, weights, strict=True)), depth=depth)
    batches = make_batches(templates, workload, random.Random(seed))
    assert batches and all(len(batch.ops) == depth for batch in batches)
    counts = Counter(op.op for batch in batches for op in batch.ops)
    slots = len(batches) * depth
    total = sum(weights)
    for name, weight in zip(names, weights, strict=True):
        assert counts[name] * total == slots * weight


def test_latencies_keep_their_column_narrow_however_slow_the_machine() -> None:
    from memlease.bench.report import _latency

    assert [_latency(ms) for ms in (0.0421, 9.9994, 11.812, 123.46, 4567.8)] == [
        "0.042",
        "9.999",
        "11.81",
        "123.5",
        "4568",
    ]
