"""Latency histogram with log-linear buckets (HdrHistogram's idea, in plain Python).

Values are nanoseconds. Each power of two is split into 64 buckets, so a bucket is at most
1/64 (1.6 %) wide relative to its value: cheap enough to record on every op, fine enough for
p99.9, and small enough to send from a worker process to the parent as a list of ints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SUB_BITS = 6
SUB_COUNT = 1 << SUB_BITS
BUCKETS = SUB_COUNT * 40  # covers 2**45 ns (about 10 hours): no op lasts longer


def bucket_of(value_ns: int) -> int:
    """The bucket index of ``value_ns`` (negative values count as 0)."""
    if value_ns < 2 * SUB_COUNT:
        return max(value_ns, 0)
    shift = value_ns.bit_length() - SUB_BITS - 1
    return min((shift << SUB_BITS) + (value_ns >> shift), BUCKETS - 1)


def bucket_low(index: int) -> int:
    """The smallest value that falls in bucket ``index``."""
    if index < 2 * SUB_COUNT:
        return index
    shift = (index >> SUB_BITS) - 1
    return (index - (shift << SUB_BITS)) << shift


def bucket_mid(index: int) -> float:
    """The middle of bucket ``index``: the value reported for a percentile falling in it."""
    return (bucket_low(index) + bucket_low(index + 1)) / 2


@dataclass
class LatencyHistogram:
    """Counts of latencies per bucket; ``record`` is the hot path."""

    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def record(self, value_ns: int) -> None:
        self.counts[bucket_of(value_ns)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram]) -> LatencyHistogram:
        result = cls()
        for part in parts:
            result.merge(part)
        return result

    def percentile(self, pct: float) -> float:
        """The latency (ns) below which ``pct`` percent of the samples fall; 0 when empty."""
        total = self.total
        if total == 0:
            return 0.0
        rank = max(1, round(total * pct / 100.0 + 0.4999999))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return bucket_mid(index)
        return bucket_mid(BUCKETS - 1)

    def nonzero(self) -> list[tuple[float, int]]:
        """(bucket middle in ns, count) for every bucket with samples, in order."""
        return [(bucket_mid(i), c) for i, c in enumerate(self.counts) if c]
