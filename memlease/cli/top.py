"""``memlease top``: a live view of one server, from its stats reply, refreshed each second.

Rates are the difference of two stats replies divided by the server's own time between them
(the difference of their uptimes), so a slow network does not bend them. Expiry lag (how
long after its deadline a lease's memory was back) is the mean over the leases that expired
between the two replies, from the change of the reply's lag sum over that of ``expired``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from memlease.core.arena import format_bytes
from memlease.core.messages import OPS, ServerStats
from memlease.units import format_duration


@dataclass(frozen=True, slots=True)
class Rates:
    """What changed between two stats replies, per second of the server's time."""

    seconds: float
    requests: dict[str, float]
    """Requests per second by op name, for the ops this release knows."""
    granted: float
    expired: float
    released: float
    hits: float
    misses: float
    expiry_lag_ms: float | None
    """The mean expiry lag of the leases that expired in between (None: none did)."""

    @property
    def total(self) -> float:
        """Requests per second, all ops together."""
        return sum(self.requests.values())


def rates(before: ServerStats, after: ServerStats, fallback_seconds: float) -> Rates:
    """The rates from ``before`` to ``after``; the time between them is the server's (their
    uptimes), or ``fallback_seconds`` when the uptimes do not tell one (a restarted server)."""
    seconds = (after.uptime_ms - before.uptime_ms) / 1000
    if seconds <= 0:
        seconds = max(fallback_seconds, 1e-3)

    def per_second(old: int, new: int) -> float:
        return max(new - old, 0) / seconds

    requests = {
        op.value: per_second(old, new)
        for op, old, new in zip(OPS, before.requests, after.requests, strict=False)
    }
    return Rates(
        seconds,
        requests,
        per_second(before.granted, after.granted),
        per_second(before.expired, after.expired),
        per_second(before.released, after.released),
        per_second(before.hits, after.hits),
        per_second(before.misses, after.misses),
        _mean_lag_ms(before, after),
    )


def _mean_lag_ms(before: ServerStats, after: ServerStats) -> float | None:
    expired = after.expired - before.expired
    if expired <= 0:
        return None
    return max(after.expiry_lag_us - before.expiry_lag_us, 0) / expired / 1000


def render(server: str, protocol: str, stats: ServerStats, change: Rates) -> RenderableType:
    """One screen of the view."""
    head = Text.assemble(
        ("memlease top", "bold"),
        f"  {server} ({protocol})  version {stats.version}  up {format_duration(stats.uptime_ms)}",
    )
    used_share = stats.used / stats.arena_size if stats.arena_size else 0.0
    reads = change.hits + change.misses
    hit_ratio = f"{change.hits / reads:.1%}" if reads else "-"
    figures = Table.grid(padding=(0, 2))
    figures.add_column(style="bold")
    figures.add_column()
    figures.add_row(
        "leases",
        f"{stats.live_leases:,} live   granted {change.granted:,.0f}/s   "
        f"released {change.released:,.0f}/s   expired {change.expired:,.0f}/s",
    )
    figures.add_row(
        "arena",
        f"used {format_bytes(stats.used)} of {format_bytes(stats.arena_size)} "
        f"({used_share:.1%})   free {format_bytes(stats.free)}   "
        f"largest free block {format_bytes(stats.largest_free)}",
    )
    figures.add_row(
        "fragmentation",
        f"external {stats.external_fragmentation:.3f}   "
        f"internal {format_bytes(stats.internal_fragmentation)}",
    )
    figures.add_row(
        "connections",
        f"{stats.connections:,} open   {stats.closed_for_guessing:,} closed for guessing ids",
    )
    figures.add_row(
        "requests",
        f"{change.total:,.0f}/s   reads {reads:,.0f}/s, hits {hit_ratio}   "
        f"refused leases {stats.refused:,} in all",
    )
    lag = "-" if change.expiry_lag_ms is None else f"{change.expiry_lag_ms:,.2f} ms"
    figures.add_row(
        "expiry lag",
        f"mean {lag}   behind {stats.expiry_behind_us / 1000:,.2f} ms",
    )
    ops = Table(box=None, padding=(0, 2), header_style="bold")
    ops.add_column("op")
    ops.add_column("ops/s", justify="right")
    ops.add_column("total", justify="right")
    totals = stats.requests_by_op()
    for op, per_second in change.requests.items():
        if totals.get(op, 0):
            ops.add_row(op, f"{per_second:,.0f}", f"{totals[op]:,}")
    return Group(head, figures, Text(""), ops)


def run_top(
    stats: Callable[[], ServerStats],
    server: str,
    protocol: str,
    *,
    interval: float = 1.0,
    count: int | None = None,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Show the view, refreshed every ``interval`` seconds from ``stats()``: in place on a
    terminal, else one screen after another. ``count``: stop after that many refreshes
    (None: until interrupted)."""
    console = console or Console()
    before, taken = stats(), time.monotonic()
    shown = 0

    def refresh() -> RenderableType:
        nonlocal before, taken, shown
        sleep(interval)
        after, now = stats(), time.monotonic()
        screen = render(server, protocol, after, rates(before, after, now - taken))
        before, taken = after, now
        shown += 1
        return screen

    if not console.is_terminal:
        while count is None or shown < count:
            console.print(refresh())
            console.print()
        return
    with Live(console=console, auto_refresh=False) as live:
        while count is None or shown < count:
            live.update(refresh(), refresh=True)
