"""Durations counted in fixed buckets, as a Prometheus histogram keeps them: sans-IO, so the
lease table and the connections count into it and the metrics read it at scrape time.

A count per bucket (not cumulative: one increment per value) and the sum of the values.
Bucket ``i`` holds values ``<= bounds[i]`` and above the bound before it; the last bucket,
past every bound, is +Inf.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

REQUEST_BOUNDS = (
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Seconds from a request's last byte to its reply handed to the socket: a small request in a
pipeline takes microseconds, a batch of 10,000 grants tens of milliseconds."""

EXPIRY_LAG_BOUNDS = (0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds from a lease's deadline to its memory back in the arena: a millisecond or two when
the expiry task keeps up, more when a million leases end at once."""


class SecondsHistogram:
    """Counts of durations (seconds) per bucket of ``bounds`` (ascending), and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        """Values per bucket; the last is past every bound (+Inf)."""
        self.total = 0.0
        """The sum of the values."""

    def observe(self, seconds: float, count: int = 1) -> None:
        """``count`` values of ``seconds`` each."""
        self.counts[bisect_left(self.bounds, seconds)] += count
        self.total += seconds * count

    def add(self, counts: Iterable[int], total: float) -> None:
        """Values already counted per bucket (``counts``, in this histogram's buckets) and
        their sum."""
        mine = self.counts
        for at, count in enumerate(counts):
            mine[at] += count
        self.total += total

    @property
    def count(self) -> int:
        """Values counted."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(bound, values <= bound)`` per bound, then ``(inf, all values)``: Prometheus's
        ``le`` buckets."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets
