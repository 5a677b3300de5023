"""One protocol's requests as the metrics count them, sans-IO: per op, how many were answered,
how long each took from its last byte to its reply handed to the socket, and the refusals.

Only a server with metrics on keeps them: its connections note each request's type as they
answer it, and hand the list over once the replies went to the socket (one call per send,
not per request), with the time they took.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import get_args

from memlease.core.errors import ErrorCode
from memlease.core.messages import OPS, Request
from memlease.core.seconds_histogram import REQUEST_BOUNDS, SecondsHistogram

_SLOT_OF: dict[type, int] = {kind: OPS.index(kind.op) for kind in get_args(Request)}
"""A request type's op, as its index in OPS."""

_COUNT_AT = 8
"""Requests in one send from which counting them by type first (in C) is cheaper than a step
per request."""


class RequestFigures:
    """One protocol's answered requests: ``times[i]`` for the op ``OPS[i]`` (its count is
    the requests answered), ``refused`` by (op index, error code)."""

    def __init__(self) -> None:
        self.times = [SecondsHistogram(REQUEST_BOUNDS) for _ in OPS]
        self.refused: Counter[tuple[int, ErrorCode]] = Counter()

    def served(
        self, kinds: list[type], refused: list[tuple[type, ErrorCode]], seconds: float
    ) -> None:
        """Requests of types ``kinds`` were answered, their replies handed to the socket
        ``seconds`` after their last byte came; ``refused``: those of them refused, with
        their error codes. A type that is no request of this release is not counted."""
        bucket = bisect_left(REQUEST_BOUNDS, seconds)
        times = self.times
        slot_of = _SLOT_OF.get
        if len(kinds) < _COUNT_AT:
            for kind in kinds:
                slot = slot_of(kind)
                if slot is not None:
                    histogram = times[slot]
                    histogram.counts[bucket] += 1
                    histogram.total += seconds
        else:
            # A send answers few kinds of request: a count per kind, in C.
            for kind in set(kinds):
                count = kinds.count(kind)
                slot = slot_of(kind)
                if slot is not None:
                    histogram = times[slot]
                    histogram.counts[bucket] += count
                    histogram.total += seconds * count
        for kind, code in refused:
            slot = slot_of(kind)
            if slot is not None:
                self.refused[slot, code] += 1
