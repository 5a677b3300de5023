"""What one benchmark case asks for: plain, picklable data shared by the parent and workers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from memlease.core.errors import ConfigError
from memlease.core.messages import LeaseId

OPS = ("get", "set", "read", "write", "lease")

SETUP_LIMIT = 60.0
"""Seconds the load processes may take to connect and prepare before a run."""
RUN_SLACK = 30.0
"""Seconds a run may overrun its warmup and duration before it counts as hung."""


@dataclass(frozen=True)
class Workload:
    """A closed-loop load: ``connections`` each keep ``depth`` requests in flight."""

    connections: int = 4
    depth: int = 1
    value_size: int = 64
    mix: tuple[tuple[str, int], ...] = (("get", 1), ("set", 1))
    duration: float = 5.0
    warmup: float = 0.5
    conn_per_request: bool = False
    lease_ttl_ms: int = 1000
    """ttl of the leases that ``lease`` ops in the mix take (the per-connection leases that
    get/set use live as long as the run)."""
    seed: int = 1
    window: tuple[float, float] | None = None
    """Also measure apart the batches that overlap this span of time.monotonic() seconds (the
    expiry storm's instant): their latency and count go to ``window_histogram``."""

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ConfigError(f"connections must be at least 1, not {self.connections}")
        if self.depth < 1:
            raise ConfigError(f"pipeline depth must be at least 1, not {self.depth}")
        if self.value_size < 1:
            raise ConfigError(f"value size must be at least 1 byte, not {self.value_size}")
        if self.conn_per_request and self.depth != 1:
            raise ConfigError("connection-per-request mode sends one request per connection")
        if not self.mix or sum(w for _, w in self.mix) <= 0:
            raise ConfigError("the op mix is empty; give e.g. --mix get=1,set=1")

    @property
    def value_ttl_ms(self) -> int:
        """The ttl of each connection's value lease: just beyond the longest a run may last
        (setup, warmup, duration, slack), so that a bench that dies leaves nothing for long."""
        return round((SETUP_LIMIT + self.warmup + self.duration + RUN_SLACK) * 1000)

    @property
    def read_span(self) -> tuple[int, int]:
        """(offset, length) that read and write ops address: the middle half of the value."""
        return self.value_size // 4, max(1, self.value_size // 2)


@dataclass(frozen=True)
class TargetSpec:
    """Where the load goes and which wire format it speaks."""

    kind: str  # "memlease", "memcached" or "redis"
    host: str
    port: int
    protocol: str = "native"  # the memlease protocol; ignored for peers
    tamper_expected: bool = False
    """Test hook: expect one byte of every get's data to differ from what was set, so that
    the run must report every get as a mismatch."""
    fleet: tuple[tuple[str, int], ...] = ()
    """A fleet's servers (``memlease bench --servers``): load process i drives server
    i mod N, so the connections spread evenly; ``host`` and ``port`` are the first's."""

    @property
    def label(self) -> str:
        if self.fleet:
            return f"memlease/{self.protocol} x{len(self.fleet)}"
        return f"memlease/{self.protocol}" if self.kind == "memlease" else self.kind


@dataclass
class WorkerResult:
    """What one load process measured, sent back to the parent."""

    ops: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=list)
    window_ops: int = 0
    window_histogram: list[int] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    elapsed: float = 0.0
    failure: str | None = None
    leases: list[LeaseId] = field(default_factory=list)
    """The value leases the process took at setup, for the parent to release."""


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """``get=9,set=1`` -> (("get", 9), ("set", 1)); a bare name weighs 1."""
    mix: list[tuple[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition("=")
        name = name.strip().lower()
        if name not in OPS:
            raise ConfigError(f"unknown op {name!r} in --mix (known: {', '.join(OPS)})")
        try:
            value = int(weight) if weight else 1
        except ValueError:
            raise ConfigError(f"weight of {name!r} in --mix is not a whole number") from None
        if value < 0:
            raise ConfigError(f"weight of {name!r} in --mix is negative")
        mix.append((name, value))
    if not mix:
        raise ConfigError("the op mix is empty; give e.g. --mix get=1,set=1")
    return tuple(mix)


def value_for(tag: str, size: int) -> bytes:
    """The bytes a connection sets: distinct per connection, so a mix-up shows as a mismatch."""
    base = hashlib.sha256(f"memlease-bench {tag}".encode()).digest()
    return (base * (size // len(base) + 1))[:size]
