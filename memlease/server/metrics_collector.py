"""The server's figures as Prometheus metrics, read from the service and the open connections
at scrape time: counting stays where it already is (the service's counters), and a scrape
costs the request path nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from memlease.core.messages import OPS
from memlease.core.seconds_histogram import SecondsHistogram
from memlease.core.service import Service
from memlease.server.connection_set import CLOSE_REASONS, CLOSED_ELSE, ConnectionSet

ALL_PROTOCOLS = "all"
"""The ``protocol`` label of ``memlease_requests_total``: the service counts requests per op
and refusal only, not per protocol (that would be more work on every request)."""


class ServerCollector(Collector):
    """The metrics of one server: ``service``'s counters and gauges, and ``connections``
    open by protocol (every one of ``protocols`` appears, 0 when none is open)."""

    def __init__(
        self, service: Service, connections: ConnectionSet, protocols: Iterable[str]
    ) -> None:
        self._service = service
        self._connections = connections
        self._protocols = tuple(dict.fromkeys(protocols))

    def collect(self) -> Iterator[Metric]:
        service, table = self._service, self._service.table
        requests = CounterMetricFamily(
            "memlease_requests",
            "Requests handled, by op and outcome (ok, or the error code refusing it).",
            labels=["op", "protocol", "outcome"],
        )
        refused_per_op: Counter[int] = Counter()
        refusals: dict[int, list[tuple[str, int]]] = {}
        for (slot, code), count in sorted(service.refusals.items()):
            refused_per_op[slot] += count
            refusals.setdefault(slot, []).append((code.name.lower(), count))
        # Grouped by op, ok first: requests handled less those refused
        for slot, handled in enumerate(service.requests):
            op = OPS[slot].value
            requests.add_metric([op, ALL_PROTOCOLS, "ok"], handled - refused_per_op[slot])
            for outcome, count in refusals.get(slot, ()):
                requests.add_metric([op, ALL_PROTOCOLS, outcome], count)
        yield requests

        yield GaugeMetricFamily("memlease_leases", "Live leases.", value=len(table))
        figures = table.arena.figures()
        arena = GaugeMetricFamily("memlease_arena_bytes", "Arena bytes by state.", labels=["state"])
        arena.add_metric(["used"], figures.used)
        arena.add_metric(["free"], figures.free)
        arena.add_metric(["largest_free"], figures.largest_free)
        yield arena
        yield GaugeMetricFamily(
            "memlease_arena_size_bytes", "The arena's size.", value=figures.size
        )
        yield GaugeMetricFamily(
            "memlease_arena_fragmentation_ratio",
            "External fragmentation: 1 - largest free block / free bytes (0 when none free).",
            value=figures.external_fragmentation,
        )
        yield CounterMetricFamily("memlease_leases_granted", "Leases granted.", value=table.granted)
        yield CounterMetricFamily(
            "memlease_leases_expired", "Leases ended by their deadline.", value=table.expired
        )
        yield CounterMetricFamily(
            "memlease_leases_released", "Leases released.", value=table.released
        )
        yield HistogramMetricFamily(
            "memlease_expiry_lag_seconds",
            "Of leases that expired: seconds from the deadline to the memory back in the arena.",
            buckets=_buckets(table.expiry_lag),
            sum_value=table.expiry_lag.total,
        )

        open_by_protocol = Counter({name: 0 for name in self._protocols})
        # At most limits.max_connections entries: a scrape stays bounded.
        for entry in self._connections:
            open_by_protocol[entry.connection.protocol] += 1
        connections = GaugeMetricFamily(
            "memlease_connections", "Open connections, by protocol.", labels=["protocol"]
        )
        for protocol, count in sorted(open_by_protocol.items()):
            connections.add_metric([protocol], count)
        yield connections

        closed = CounterMetricFamily(
            "memlease_connections_closed",
            "Connections closed, by reason; limit and shutdown count those refused on accept.",
            labels=["reason"],
        )
        counted = Counter({name: 0 for name in (*CLOSE_REASONS.values(), *CLOSED_ELSE)})
        counted.update(self._connections.closed)
        for reason, count in sorted(counted.items()):
            closed.add_metric([reason], count)
        yield closed


def server_registry(
    service: Service, connections: ConnectionSet, protocols: Iterable[str]
) -> CollectorRegistry:
    """A registry of the server's metrics alone (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(service, connections, protocols))
    return registry



def _buckets(histogram: SecondsHistogram) -> list[tuple[str, float]]:
    """A histogram's ``le`` buckets as prometheus-client takes them."""
    return [(_le(bound), count) for bound, count in histogram.cumulative()]


def _le(bound: float) -> str:
    """A bucket bound in the exposition's own float format: "+Inf", "0.005"."""
    return floatToGoString(bound)  # type: ignore[no-untyped-call,no-any-return]
