"""The server's figures as Prometheus metrics, read at scrape time from the service, the open
connections and each protocol's request figures (which the connections count into once per
send): a scrape adds nothing to the request path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from memlease.core.messages import OPS
from memlease.core.seconds_histogram import REQUEST_BOUNDS, SecondsHistogram
from memlease.core.service import Service
from memlease.server.connection_set import CLOSE_REASONS, CLOSED_ELSE, ConnectionSet
from memlease.server.request_figures import RequestFigures


class ServerCollector(Collector):
    """The metrics of one server: ``service``'s counters and gauges, ``connections`` open
    by protocol, and each protocol's ``figures`` (every protocol appears, 0 when idle)."""

    def __init__(
        self,
        service: Service,
        connections: ConnectionSet,
        figures: Mapping[str, RequestFigures],
    ) -> None:
        self._service = service
        self._connections = connections
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        table = self._service.table
        yield from self._requests()
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

        open_by_protocol = Counter({name: 0 for name in self._figures})
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


    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "memlease_requests",
            "Requests answered, by op, protocol and outcome (ok, or the error code refusing "
            "it); counted once the reply is handed to the socket.",
            labels=["op", "protocol", "outcome"],
        )
        for protocol, figures in sorted(self._figures.items()):
            refused: dict[int, list[tuple[str, int]]] = {}
            for (slot, code), count in sorted(figures.refused.items()):
                refused.setdefault(slot, []).append((code.name.lower(), count))
            # Grouped by op, ok first: requests answered less those refused.
            for slot, times in enumerate(figures.times):
                op = OPS[slot].value
                refusals = refused.get(slot, [])
                ok = times.count - sum(count for _, count in refusals)
                requests.add_metric([op, protocol, "ok"], ok)
                for outcome, count in refusals:
                    requests.add_metric([op, protocol, outcome], count)
        yield requests

        seconds = HistogramMetricFamily(
            "memlease_request_seconds",
            "Seconds from a request's last byte to its reply handed to the socket, by op.",
            labels=["op"],
        )
        for slot, each_op in enumerate(OPS):
            # Over all protocols: the metric is labelled by op alone.
            merged = SecondsHistogram(REQUEST_BOUNDS)
            for figures in self._figures.values():
                merged.add(figures.times[slot].counts, figures.times[slot].total)
            seconds.add_metric([each_op.value], _buckets(merged), merged.total)
        yield seconds


def server_registry(
    service: Service, connections: ConnectionSet, figures: Mapping[str, RequestFigures]
) -> CollectorRegistry:
    """A registry of the server's metrics alone (no process or platform collectors);
    ``figures``: each protocol's request figures, by protocol name."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(service, connections, figures))
    return registry



def _buckets(histogram: SecondsHistogram) -> list[tuple[str, float]]:
    """A histogram's ``le`` buckets as prometheus-client takes them."""
    return [(_le(bound), count) for bound, count in histogram.cumulative()]


def _le(bound: float) -> str:
    """A bucket bound in the exposition's own float format: "+Inf", "0.005"."""
    return floatToGoString(bound)  # type: ignore[no-untyped-call,no-any-return]
