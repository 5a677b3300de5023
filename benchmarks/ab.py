"""A/B harness: server speed of a baseline commit, the working tree and the trio ceiling, side
by side in one run (docs/performance.md, "A/B script"). Run it with the venv's python:

    .venv/bin/python benchmarks/ab.py                        # 2f2406d vs the tree, 3 rounds of 3 s
    .venv/bin/python benchmarks/ab.py --baseline 1733bdd --rounds 5 --cases pipelined,one-in-flight
    .venv/bin/python benchmarks/ab.py --rounds 1 --duration 1s --json /tmp/ab.json
    .venv/bin/python benchmarks/ab.py --baseline HEAD --new-args="--metrics 0"   # what a flag costs

It uses only ``memlease serve`` and ``memlease bench`` (next to that python), no internals. Each
run gets a fresh server on core 0 (``taskset -c 0``) and the load on core 1 (``taskset -c 1
memlease bench --case CASE --server 127.0.0.1:PORT --duration D --warmup W --no-progress
--json``). Rounds are interleaved: each runs every case on the three targets, their order
rotating by one per round (a connection per request leaves TIME_WAIT sockets for the next run):

- baseline: ``git archive COMMIT | tar -x -C TMP``, served by the same python as
  ``PYTHONPATH=TMP:TMP/plugins python -P -c WRAPPER serve --listen native=PORT --arena 256MiB``,
  WRAPPER being ``from memlease.cli import main; sys.exit(main())`` plus a check; ``-P`` keeps
  the current directory off sys.path. The protocols are entry points of the installed tree, but
  an entry point imports its module by name, so TMP/plugins on PYTHONPATH loads the copy's.
  WRAPPER also drops the editable install's finder from sys.meta_path, without which modules the
  copy lacks (``memlease.core``, imported by tests/thirdparty's ``memlease_demo`` plugin) came
  from the tree; that plugin now fails to load, as against an installed baseline. Checked on
  every baseline run: WRAPPER exits with status 3 unless ``memlease`` and ``memlease_native``
  come from TMP, and on its clean shutdown (SIGTERM) logs ``ab-check:`` with every loaded module
  of the copy's top-level packages not from TMP; the harness stops unless that says ``none``.
- new: ``memlease serve --listen native=PORT --arena 256MiB`` (the working tree, editable),
  with ``--new-args`` after it.
- ceiling: ``python benchmarks/echo_native.py PORT`` from the working tree.

Per run: ops/s as the bench reports it (``median.ops_per_s``, measured time only), and server
CPU per op: utime + stime (/proc/PID/stat fields 14, 15) read just before and after the bench
command, over the bench's ops. That CPU includes the warmup's ops and the connects, the divisor
does not: µs/op is overstated by up to (W + D) / D, alike for all targets. Tables give medians
over rounds and ratios of medians. Servers and benches run in their own sessions and are killed
by process group on any exit (SIGTERM and SIGHUP included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CASES = ("pipelined", "one-in-flight", "large-values", "conn-per-request")
TARGETS = ("baseline", "new", "ceiling")
TICK = os.sysconf("SC_CLK_TCK")
Proc = subprocess.Popen[bytes]
Row = dict[str, Any]
LIVE: set[Proc] = set()  # every process started and not yet reaped
WRAPPER = """\
import os, sys
root, tops = os.environ["AB_COPY"] + os.sep, set(os.environ["AB_TOPS"].split(","))
sys.meta_path[:] = [f for f in sys.meta_path  # drop the editable install's finder of the tree
    if not tops & set(getattr(sys.modules.get(getattr(f, "__module__", "")), "MAPPING", {}))]
import memlease, memlease_native
from memlease.cli import main
main = getattr(main, "main", main)  # a module since the layout by layer (memlease/cli/main.py)
def ours(m): return (getattr(m, "__file__", None) or "").startswith(root)
if not (ours(memlease) and ours(memlease_native)):
    sys.exit(print("ab: not the copy:", memlease.__file__, memlease_native.__file__) or 3)
try:
    sys.exit(main())
finally:
    bad = sorted(n for n, m in list(sys.modules.items()) if n.split(".")[0] in tops and not ours(m))
    print("ab-check:", memlease.__file__, memlease_native.__file__, "not from the copy:",
          ",".join(bad) or "none", file=sys.stderr, flush=True)
"""


class Fatal(Exception):
    """Stops the whole comparison (the baseline is not the copy)."""


def seconds(text: str) -> float:
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text):
        return float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m[2]]
    raise argparse.ArgumentTypeError(f"bad duration {text!r} (use ms, s or m)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return int(fields[11]) + int(fields[12])


def spawn(cmd: list[str], env: dict[str, str], cwd: Path, out: Any, err: Any) -> Proc:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
    LIVE.add(proc)
    return proc


def stop(proc: Proc) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the server drains for up to 5 s on SIGTERM
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    LIVE.discard(proc)


def start(target: str, port: int, copy: Path, log: Path, new_args: list[str]) -> Proc:
    py, serve = str(BIN / "python"), ["serve", "--listen", f"native={port}", "--arena", "256MiB"]
    env: dict[str, str] = {}
    if target == "baseline":
        tops = [p.name for d in (copy, copy / "plugins") for p in d.iterdir()
                if (p / "__init__.py").is_file()]
        env = {"PYTHONPATH": f"{copy}{os.pathsep}{copy / 'plugins'}", "AB_COPY": str(copy),
               "AB_TOPS": ",".join(tops)}
        cmd = [py, "-P", "-c", WRAPPER, *serve]
    elif target == "new":
        cmd = [str(BIN / "memlease"), *serve, *new_args]
    else:
        cmd = [py, str(REPO / "benchmarks" / "echo_native.py"), str(port)]
    with log.open("wb") as out:
        proc = spawn(["taskset", "-c", "0", *cmd], env, log.parent, out, subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            LIVE.discard(proc)
            tail = " ".join(log.read_text(errors="replace").strip().splitlines()[-1:])
            msg = f"{target} server exited with {proc.returncode}: {tail}"
            raise Fatal(msg) if target == "baseline" and proc.returncode == 3 else RuntimeError(msg)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{target} server not listening on {port} after 30 s")


def bench(case: str, port: int, args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    cmd = ["taskset", "-c", "1", str(BIN / "memlease"), "bench", "--case", case,
           "--server", f"127.0.0.1:{port}", "--duration", f"{args.duration:g}s",
           "--warmup", f"{args.warmup:g}s", "--no-progress", "--json"]
    proc = spawn(cmd, {}, cwd, subprocess.PIPE, subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=args.duration + args.warmup + 120)
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"bench exited with {proc.returncode}: {err.decode()[-300:]}")
    target = next(iter(json.loads(out)["cases"][0]["targets"].values()))
    if target.get("status") != "ok":
        raise RuntimeError(f"bench status {target.get('status')}: {str(target)[:300]}")
    return dict(target["median"])


def run_one(rnd: int, case: str, target: str, copy: Path, args: argparse.Namespace) -> Row:
    port = free_port()
    log = copy.parent / f"{target}-{case}-{rnd}.log"
    row: Row = {"round": rnd, "case": case, "target": target, "port": port}
    try:
        proc = start(target, port, copy, log, shlex.split(args.new_args))
        try:
            before = cpu_ticks(proc.pid)
            result = bench(case, port, args, copy.parent)
            cpu = (cpu_ticks(proc.pid) - before) / TICK
        finally:
            stop(proc)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        return row | {"error": str(exc)}
    row |= {"ops_per_s": result["ops_per_s"], "ops": result["ops"], "errors": result["errors"],
            "server_cpu_s": cpu, "us_per_op": cpu / max(1, result["ops"]) * 1e6}
    if target == "baseline":
        check = [ln for ln in log.read_text(errors="replace").splitlines() if "ab-check:" in ln]
        if not check or not check[-1].endswith("not from the copy: none"):
            raise Fatal(f"baseline check failed: {check[-1] if check else 'no ab-check line'}")
        row["check"] = check[-1]
    return row


def fmt_ops(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:,.0f}"


def table(case: str, rows: list[Row], labels: dict[str, str]) -> str:
    mine = {t: [r for r in rows if r["case"] == case and r["target"] == t] for t in TARGETS}
    ok = {t: [r for r in mine[t] if "error" not in r] for t in TARGETS}
    ops = {t: statistics.median(r["ops_per_s"] for r in ok[t]) for t in TARGETS if ok[t]}
    cpu = {t: statistics.median(r["us_per_op"] for r in ok[t]) for t in TARGETS if ok[t]}
    out = [f"### {case}", "", "| target | ops/s | server µs/op | ops/s vs ceiling "
           "| CPU/op vs baseline | runs ok |", "|---|---:|---:|---:|---:|---:|"]
    for t in TARGETS:
        if t not in ops:
            out.append(f"| {labels[t]} | failed | | | | 0/{len(mine[t])} |")
            continue
        vs_ceiling = f"{ops[t] / ops['ceiling']:.2f}" if "ceiling" in ops else "-"
        vs_base = f"{cpu[t] / cpu['baseline']:.2f}" if "baseline" in cpu else "-"
        out.append(f"| {labels[t]} | {fmt_ops(ops[t])} | {cpu[t]:.1f} | {vs_ceiling} "
                   f"| {vs_base} | {len(ok[t])}/{len(mine[t])} |")
    pairs = [(a, b) for a in ok["new"] for b in ok["baseline"] if a["round"] == b["round"]]
    if pairs:
        ahead = sum(1 for a, b in pairs if a["ops_per_s"] > b["ops_per_s"])
        out += ["", f"new ahead of baseline (ops/s) in {ahead} of {len(pairs)} rounds"]
    return "\n".join(out)


def git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True).stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", default="2f2406d", help="commit to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    p.add_argument("--duration", type=seconds, default="3s", help="measured time per run")
    p.add_argument("--warmup", type=seconds, default="500ms", help="its CPU counts in µs/op")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the raw results here")
    p.add_argument("--new-args", default="", help="more `serve` flags for the tree's server")
    args = p.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if bad := [c for c in cases if c not in CASES]:
        p.error(f"unknown case(s) {','.join(bad)}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if not (BIN / "memlease").is_file():
        p.error(f"no memlease next to {sys.executable}: run this with the venv's python")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    tmp, rows = Path(tempfile.mkdtemp(prefix="memlease-ab-")), []
    info = {k: str(v) for k, v in vars(args).items()}
    try:
        sha = git("rev-parse", "--short", f"{args.baseline}^{{commit}}").decode().strip()
        head = git("rev-parse", "--short", "HEAD").decode().strip()
        info |= {"baseline_sha": sha, "head": head}
        (copy := tmp / "copy").mkdir()
        subprocess.run(["tar", "-x", "-C", str(copy)], input=git("archive", sha), check=True)
        labels = {"baseline": f"baseline {sha}", "new": f"new (tree at {head})",
                  "ceiling": "trio echo (ceiling)"}
        for rnd in range(args.rounds):
            for case in cases:
                for target in TARGETS[rnd % 3 :] + TARGETS[: rnd % 3]:
                    rows.append(row := run_one(rnd, case, target, copy, args))
                    shown = row.get("error") or (
                        f"{fmt_ops(row['ops_per_s'])} ops/s, {row['us_per_op']:.1f} µs/op")
                    print(f"round {rnd + 1} {case} {target}: {shown}", file=sys.stderr, flush=True)
                    if rnd == 0 and case == cases[0] and "check" in row:
                        print(f"  {row['check']}", file=sys.stderr, flush=True)
        print(f"\n{args.rounds} round(s) of {args.duration:g} s (+{args.warmup:g} s warmup, "
              "whose CPU counts in µs/op); medians; servers on core 0, load on core 1\n")
        print("\n\n".join(table(c, rows, labels) for c in cases))
        return 0
    except KeyboardInterrupt:
        return 130
    except Fatal as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"ab: {exc}: {(exc.stderr or b'').decode().strip()}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in list(LIVE):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
        if args.json and rows:  # whatever ran, also after a failure or a signal
            args.json.write_text(json.dumps({"settings": info, "runs": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
