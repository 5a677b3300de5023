"""Named cases: the four the project is judged on (``--suite``) and the expiry storm."""

from __future__ import annotations

from dataclasses import dataclass

from memlease.bench.workload import Workload


@dataclass(frozen=True)
class Case:
    """A workload with a name, and the memlease/memcached ratio the project aims for."""

    name: str
    workload: Workload
    goal: float | None = None
    description: str = ""


def suite_cases(duration: float, warmup: float) -> list[Case]:
    """The judged cases, 64-byte values unless said, get:set 1:1."""

    def w(**kw: object) -> Workload:
        return Workload(duration=duration, warmup=warmup, **kw)  # type: ignore[arg-type]

    return [
        Case("pipelined", w(connections=4, depth=32), 1.5, "4 conns x 32 pipelined"),
        Case("one-in-flight", w(connections=8, depth=1), 0.3, "8 conns, one request in flight"),
        Case(
            "large-values",
            w(connections=2, depth=1, value_size=512 * 1024),
            0.8,
            "2 conns, 512 KiB values",
        ),
        Case(
            "conn-per-request",
            w(connections=4, depth=1, conn_per_request=True),
            0.8,
            "connection per request, 4 clients",
        ),
    ]


CASE_NAMES = ("pipelined", "one-in-flight", "large-values", "conn-per-request", "expiry-storm")
