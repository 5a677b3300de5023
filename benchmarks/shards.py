"""One server against ``serve --shards 2`` (and memcached with two threads), in one
``memlease bench`` run, with each memlease server's CPU time per op from /proc.

    python -m benchmarks.shards [--depth 1] [--repeat 3] [--duration 4s] [--no-memcached]

Starts ``memlease serve --listen uuid=0`` and ``memlease serve --shards 2 --listen uuid=0``
apart (so their processes' utime+stime can be read), then runs
``memlease bench --protocol uuid --server ONE --servers SHARDS --compare memcached
--peer-threads 2 -c 8 --workers 2``, whose targets take turns. The CPU figure counts each
server's whole life over the bench (warm-ups included, idle turns costing nothing), divided
by the ops measured on it: a slight over-estimate, the same for both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEMLEASE = [sys.executable, "-m", "memlease.cli.main"]


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _wait_for(path: Path, pattern: str, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(pattern, path.read_text())
        if found:
            return found
        time.sleep(0.05)
    raise SystemExit(f"no {pattern!r} in {path} within {timeout} s:\n{path.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", default="1")
    parser.add_argument("--repeat", default="3")
    parser.add_argument("--duration", default="4s")
    parser.add_argument("--no-memcached", action="store_true")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="memlease-shards-"))
    one_log, fleet_out, fleet_err = logs / "one.log", logs / "fleet.out", logs / "fleet.err"
    with one_log.open("w") as log:
        one = subprocess.Popen([*MEMLEASE, "serve", "--listen", "uuid=0"], stderr=log)
    with fleet_out.open("w") as out, fleet_err.open("w") as err:
        fleet = subprocess.Popen(
            [*MEMLEASE, "serve", "--shards", "2", "--listen", "uuid=0"], stdout=out, stderr=err
        )
    try:
        one_address = _wait_for(one_log, r"uuid on (127\.0\.0\.1:\d+)")[0]
        shards = _wait_for(fleet_out, r"uuid=(\S+)\n")[0]
        shard_pids = [int(p) for p in _wait_for(fleet_err, r"shard \d \(pid (\d+)\)")]
        command = ["bench", "--protocol", "uuid", "--server", one_address, "--servers", shards,
                   "-c", "8", "-d", args.depth, "--workers", "2", "--duration", args.duration,
                   "--repeat", args.repeat, "--no-progress", "--json"]  # fmt: skip
        if not args.no_memcached:
            command += ["--compare", "memcached", "--peer-threads", "2"]
        before = _cpu_seconds([one.pid]), _cpu_seconds(shard_pids)
        done = subprocess.run([*MEMLEASE, *command], capture_output=True, text=True, check=True)
        after = _cpu_seconds([one.pid]), _cpu_seconds(shard_pids)
    finally:
        for process in (one, fleet):
            process.send_signal(signal.SIGTERM)
        for process in (one, fleet):
            process.wait(20)
    targets = json.loads(done.stdout)["cases"][0]["targets"]
    cpu = {"memlease/uuid": after[0] - before[0], "memlease/uuid x2": after[1] - before[1]}
    print(f"memlease {' '.join(command)}")
    for label, target in targets.items():
        rate = target["median"]["ops_per_s"]
        line = f"  {label:<18} {rate:>10,.0f} ops/s (median)"
        if label in cpu:
            ops = sum(run["ops"] for run in target["runs"])
            line += f"   server CPU {cpu[label] / ops * 1e6:5.2f} us/op"
        print(line)


if __name__ == "__main__":
    main()
