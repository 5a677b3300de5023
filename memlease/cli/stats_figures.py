"""A stats reply as the CLI shows it: JSON records for ``stats``, ``stats`` of a fleet and
``top``."""

from __future__ import annotations

from memlease.core.messages import ServerStats, fields_of


def stats_record(stats: ServerStats) -> dict[str, object]:
    """Every figure by name, as JSON gives it; the request counts by op name."""
    return {**fields_of(stats), "requests": stats.requests_by_op()}
