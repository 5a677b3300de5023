"""The results of a benchmark: a table on the terminal, JSON, and a markdown report."""

from __future__ import annotations

import importlib
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memlease.bench.cases import Case
from memlease.bench.runner import RunResult


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
            ratio_text = f"{ratio:.2f}" if ratio is not None else ""
            if target == result.subject and result.case.goal is not None:
                ratio_text = f"goal >= {result.case.goal}"
            rows.append(
                [
                    result.case.name,
                    target,
                    f"{run.ops_per_s:,.0f}",
                    f"{run.latency_ms(50):.3f}",
                    f"{run.latency_ms(99):.3f}",
                    f"{run.latency_ms(99.9):.3f}",
                    str(run.error_count),
                    ratio_text,
                ]
            )
    return rows


HEADERS = ["case", "target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "memlease/peer"]


def print_table(results: list[CaseResult], console: Console) -> None:
    table = Table(title="memlease bench (median of repeats)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("case", "target") else "right")
    for row in _rows(results):
        table.add_row(*row)
    console.print(table)
    for result in results:
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
        "# memlease bench",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['system']}, "
        f"Python {machine['python']}.",
        f"Settings: {', '.join(f'{k}={v}' for k, v in settings.items())}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    lines.append("")
    for result in results:
        if result.notes:
            lines += [
                f"{result.case.name}: " + ", ".join(f"{k}={v}" for k, v in result.notes.items()),
                "",
            ]
    if image:
        lines += ["## Latency", "", f"![latency histogram]({image})", ""]
    else:
        lines += ["(Install the `plot` extra for a latency histogram.)", ""]
    return "\n".join(lines)


def write_report(path: Path, results: list[CaseResult], settings: dict[str, Any]) -> Path | None:
    """Write the markdown report, and the histogram PNG beside it when matplotlib is there.
    Returns the PNG's path, or None without matplotlib."""
    image = path.with_suffix(".png")
    drawn = draw_histogram(image, results)
    path.write_text(markdown(results, settings, image.name if drawn else None), encoding="utf-8")
    return image if drawn else None


def draw_histogram(image: Path, results: list[CaseResult]) -> bool:
    # Imported by name so that mypy and the core install need no matplotlib (an extra).
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 3 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        for target in result.runs:
            run = result.median(target)
            if run is None:
                continue
            points = run.histogram.nonzero()
            total = max(1, run.histogram.total)
            ax.step(
                [p[0] / 1e6 for p in points],
                [p[1] / total for p in points],
                where="mid",
                label=target,
            )
        ax.set_xscale("log")
        ax.set_title(result.case.name)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("share of batches")
        ax.legend()
    fig.tight_layout()
    fig.savefig(image)
    plt.close(fig)
    return True
