"""The results of a benchmark: a table on the terminal, JSON, and a markdown report."""

from __future__ import annotations

import importlib
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from memlease.bench.cases import Case
from memlease.bench.runner import RunResult
from memlease.units import format_size


@dataclass
class CaseResult:
    """Every run of one case: per target, the repeats; and the targets that could not run."""

    case: Case
    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    subject: str = "memlease/native"
    notes: dict[str, Any] = field(default_factory=dict)

    def median(self, target: str) -> RunResult | None:
        """The run with the median ops/s (the lower middle of an even count)."""
        runs = sorted(self.runs.get(target, []), key=lambda r: r.ops_per_s)
        return runs[(len(runs) - 1) // 2] if runs else None

    def ratio(self, peer: str) -> float | None:
        """memlease's median ops/s over the peer's; None when either did not run."""
        mine, theirs = self.median(self.subject), self.median(peer)
        if mine is None or theirs is None or theirs.ops_per_s == 0:
            return None
        return mine.ops_per_s / theirs.ops_per_s

    def targets(self) -> list[str]:
        return [*self.runs, *(t for t in self.unavailable if t not in self.runs)]


def machine_description() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def run_summary(run: RunResult) -> dict[str, Any]:
    return {
        "ops_per_s": round(run.ops_per_s, 1),
        "ops": run.ops,
        "seconds": round(run.elapsed, 3),
        "p50_ms": round(run.latency_ms(50), 4),
        "p99_ms": round(run.latency_ms(99), 4),
        "p999_ms": round(run.latency_ms(99.9), 4),
        "errors": run.error_count,
        "error_kinds": dict(run.errors),
        "op_counts": dict(run.op_counts),
        "bytes_sent": run.bytes_sent,
        "bytes_received": run.bytes_received,
    }


def to_json(results: list[CaseResult], settings: dict[str, Any]) -> dict[str, Any]:
    cases = []
    for result in results:
        targets: dict[str, Any] = {}
        for target in result.targets():
            if target in result.unavailable:
                targets[target] = {"status": result.unavailable[target]}
                continue
            runs = result.runs[target]
            median = result.median(target)
            assert median is not None
            targets[target] = {
                "status": "ok",
                "runs": [run_summary(r) for r in runs],
                "median": run_summary(median),
                "ops_per_s_spread": _spread(runs),
            }
        ratios = {
            t: round(r, 3)
            for t in result.targets()
            if not t.startswith("memlease") and (r := result.ratio(t)) is not None
        }
        cases.append(
            {
                "name": result.case.name,
                "description": result.case.description,
                "workload": asdict(result.case.workload),
                "goal_vs_memcached": result.case.goal,
                "targets": targets,
                "ratios": ratios,
                "notes": result.notes,
            }
        )
    return {"machine": machine_description(), "settings": settings, "cases": cases}


def _spread(runs: list[RunResult]) -> float:
    rates = [r.ops_per_s for r in runs]
    return round(statistics.pstdev(rates) / statistics.fmean(rates), 3) if len(rates) > 1 else 0.0


def _rows(results: list[CaseResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for target in result.targets():
            if target in result.unavailable:
                rows.append([result.case.name, target, result.unavailable[target], *[""] * 5])
                continue
            run = result.median(target)
            assert run is not None
            ratio = result.ratio(target) if not target.startswith("memlease") else None
            rows.append(
                [
                    result.case.name,
                    target,
                    f"{run.ops_per_s:,.0f}",
                    _latency(run.latency_ms(50)),
                    _latency(run.latency_ms(99)),
                    _latency(run.latency_ms(99.9)),
                    str(run.error_count),
                    f"{ratio:.2f}" if ratio is not None else "",
                ]
            )
    return rows


def _latency(ms: float) -> str:
    """Milliseconds in at most 6 characters, so the table keeps to 80 columns: three decimals
    below 10 ms, fewer above (a loaded machine's p99.9 reaches tens of ms)."""
    if ms < 10:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.2f}"
    return f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


HEADERS = ["case", "target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "vs peer"]
RATIO_NOTE = "vs peer: memlease's ops/s divided by that peer's"


def title(results: list[CaseResult]) -> str:
    """What each row is: one run, or the median of several."""
    repeats = max((len(runs) for r in results for runs in r.runs.values()), default=1)
    shown = "one run per target" if repeats == 1 else f"median of {repeats} runs per target"
    return f"memlease bench ({shown})"


def load_text(case: Case) -> str:
    """The load of ``case`` in one line: what a reader needs to compare runs."""
    w = case.workload
    mix = ":".join(str(weight) for _, weight in w.mix)
    names = ":".join(name for name, _ in w.mix)
    conns = "a connection per request, " if w.conn_per_request else ""
    return (
        f"{conns}{w.connections} connections x depth {w.depth}, {format_size(w.value_size)} "
        f"values, {names} {mix}, {w.duration:g} s after {w.warmup:g} s warmup"
    )


def print_table(results: list[CaseResult], console: Console) -> None:
    # One space between columns and none at the edges: the suite's widest rows, with a
    # peer, fit 80 columns.
    table = Table(
        title=title(results),
        caption=RATIO_NOTE,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for header in HEADERS:
        if header in ("case", "target"):
            # Never cut: a row is useless without its case and target.
            longest = max((len(row[HEADERS.index(header)]) for row in _rows(results)), default=0)
            table.add_column(header, no_wrap=True, min_width=max(len(header), longest))
        else:
            table.add_column(header, justify="right")
    for row in _rows(results):
        table.add_row(*row)
    console.print(table)
    for result in results:
        console.print(f"{result.case.name}: {load_text(result.case)}")
        if result.notes:
            notes = ", ".join(f"{k}={v}" for k, v in result.notes.items())
            console.print(f"{result.case.name}: {notes}")
    for result in results:
        for target, runs in result.runs.items():
            for run in runs:
                for kind, count in sorted(run.errors.items()):
                    console.print(f"[red]{result.case.name} {target}: {count} x {kind}[/red]")


def markdown(results: list[CaseResult], settings: dict[str, Any], image: str | None) -> str:
    machine = machine_description()
    lines = [
        f"# {title(results)}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['system']}, "
        f"Python {machine['python']}.",
        f"Settings: {', '.join(f'{k}={v}' for k, v in settings.items())}.",
        "",
        "| case | load |",
        "|---|---|",
        *(f"| {r.case.name} | {load_text(r.case)} |" for r in results),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    lines += ["", f"{RATIO_NOTE}.", ""]
    for result in results:
        if result.notes:
            lines += [
                f"{result.case.name}: " + ", ".join(f"{k}={v}" for k, v in result.notes.items()),
                "",
            ]
    if image:
        lines += ["## Latency", "", f"![latency by percentile]({image})", ""]
    else:
        lines += ["(Install the `plot` extra for a latency plot.)", ""]
    return "\n".join(lines)


def write_report(path: Path, results: list[CaseResult], settings: dict[str, Any]) -> Path | None:
    """Write the markdown report, and the latency plot PNG beside it when matplotlib is there.
    Returns the PNG's path, or None without matplotlib."""
    image = path.with_suffix(".png")
    drawn = draw_percentiles(image, results)
    path.write_text(markdown(results, settings, image.name if drawn else None), encoding="utf-8")
    return image if drawn else None


PERCENTILES = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999)


def percentile_points(run: RunResult) -> tuple[list[float], list[float]]:
    """(x, latency ms) of ``run`` at each of its buckets' upper ranks, x = 1 / (1 - rank), as
    HdrHistogram plots them: equal steps for 90, 99, 99.9 % ..., so the tail gets room."""
    total = run.histogram.total
    xs: list[float] = []
    ms: list[float] = []
    seen = 0
    for value_ns, count in run.histogram.nonzero():
        seen += count
        rank = min(seen / total, 1 - 1 / (10 * total))  # the last point stays finite
        xs.append(1 / (1 - rank))
        ms.append(value_ns / 1e6)
    return xs, ms


def draw_percentiles(image: Path, results: list[CaseResult]) -> bool:
    """Latency (log scale) by percentile for each case, every target a line."""
    # Imported by name so that mypy and the core install need no matplotlib (an extra).
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.6 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        for target in result.runs:
            run = result.median(target)
            if run is None or run.histogram.total == 0:
                continue
            xs, ms = percentile_points(run)
            label = f"{target}: {run.ops_per_s:,.0f} ops/s, p99 {run.latency_ms(99):.3g} ms"
            ax.step(xs, ms, where="post", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1 / (1 - p / 100) for p in PERCENTILES], [f"{p:g}%" for p in PERCENTILES])
        ax.minorticks_off()
        ax.set_title(f"{result.case.name}: {load_text(result.case)}", fontsize=9)
        ax.set_xlabel("percentile (batches at or below the latency)")
        ax.set_ylabel("latency (ms, log scale)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(image, dpi=110)
    plt.close(fig)
    return True
