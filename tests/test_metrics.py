"""The Prometheus endpoint: `memlease serve --metrics HOST:PORT` serves GET /metrics."""

from __future__ import annotations

import uuid
from pathlib import Path

import h11
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from memlease.core.errors import ConfigError, LeaseNotFound
from memlease.server.config import load_config
from memlease.server.config_values import parse_metrics_address
from memlease.server.metrics import MAX_HEADER_BYTES, MAX_METRICS_CONNECTIONS
from memlease.server.sharding import shard_configs
from tests.conftest import RunningServer, StartServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(
    server: RunningServer, target: str = "/metrics", method: str = "GET"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request to the metrics endpoint with an h11 client: status, headers, body."""
    http = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(*server.address("metrics"))
    async with stream:
        request = h11.Request(method=method, target=target, headers=[("host", "memlease")])
        await stream.send_all(http.send(request) + (http.send(h11.EndOfMessage()) or b""))
        status, headers, body = 0, {}, b""
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body


async def scrape(server: RunningServer) -> Samples:
    status, headers, body = await http_get(server)
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def requests(samples: Samples, op: str, outcome: str, protocol: str = "native") -> float:
    labels = (("op", op), ("outcome", outcome), ("protocol", protocol))
    return samples[("memlease_requests_total", labels)]


def seconds(samples: Samples, op: str, le: str | None = None) -> float:
    """memlease_request_seconds of ``op``: the count of bucket ``le``, or (None) of all."""
    if le is None:
        return samples[("memlease_request_seconds_count", (("op", op),))]
    return samples[("memlease_request_seconds_bucket", (("le", le), ("op", op)))]


async def test_a_scrape_counts_a_known_sequence_of_requests(start_server: StartServer) -> None:
    server = await start_server("native", "uuid", metrics_listen="127.0.0.1:0")
    async with await server.connect("native") as client:
        granted = [await client.lease(100, 60_000) for _ in range(3)]
        await client.get(granted[0].lease_id)
        await client.get(granted[1].lease_id)
        await client.release(granted[2].lease_id)
        with pytest.raises(LeaseNotFound):
            await client.get(granted[2].lease_id)
    async with await server.connect("uuid") as client:
        await client.lease(100, 60_000)
        with pytest.raises(LeaseNotFound):
            await client.stat(uuid.uuid4())
        samples = await scrape(server)

    assert requests(samples, "lease", "ok") == 3
    assert requests(samples, "get", "ok") == 2
    assert requests(samples, "get", "not_found") == 1
    assert requests(samples, "release", "ok") == 1
    assert requests(samples, "set", "ok") == 0
    # Each protocol is counted apart.
    assert requests(samples, "lease", "ok", "uuid") == 1
    assert requests(samples, "stat", "not_found", "uuid") == 1
    assert requests(samples, "stat", "ok", "uuid") == requests(samples, "get", "ok", "uuid") == 0
    assert requests(samples, "stat", "ok") == 0
    # Each request's time, by op over all protocols: the bucket counts are cumulative, and
    # a request on loopback is answered within a second.
    assert seconds(samples, "lease") == 4 and seconds(samples, "get") == 3
    assert seconds(samples, "release") == seconds(samples, "stat") == 1
    assert seconds(samples, "set") == 0
    assert seconds(samples, "get", "1.0") == seconds(samples, "get", "+Inf") == 3
    buckets = [seconds(samples, "lease", le) for le in ("5e-05", "0.001", "0.1", "+Inf")]
    assert buckets == sorted(buckets)
    assert 0 < samples[("memlease_request_seconds_sum", (("op", "lease"),))] < 4
    assert samples[("memlease_leases", ())] == 3
    assert samples[("memlease_leases_granted_total", ())] == 4
    assert samples[("memlease_leases_released_total", ())] == 1
    assert samples[("memlease_leases_expired_total", ())] == 0
    used = samples[("memlease_arena_bytes", (("state", "used"),))]
    free = samples[("memlease_arena_bytes", (("state", "free"),))]
    assert used == 3 * 128  # three leases of 100 B, a 128 B block each
    assert used + free == samples[("memlease_arena_size_bytes", ())]
    assert samples[("memlease_arena_bytes", (("state", "largest_free"),))] <= free
    assert 0 <= samples[("memlease_arena_fragmentation_ratio", ())] < 1
    # The uuid client's connection is the only one open, and the other protocol shows 0.
    assert samples[("memlease_connections", (("protocol", "uuid"),))] == 1
    assert samples[("memlease_connections", (("protocol", "native"),))] == 0


async def test_expired_leases_are_counted(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("native", metrics_listen="127.0.0.1:0")
    async with await server.connect("native") as client:
        await client.lease(100, 1000)
    await trio.sleep(2)
    samples = await scrape(server)
    assert samples[("memlease_leases_expired_total", ())] == 1
    assert samples[("memlease_leases", ())] == 0
    assert samples[("memlease_connections", (("protocol", "native"),))] == 0


async def test_expiry_lag_is_a_histogram_from_deadline_to_memory_back(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    server = await start_server("native", metrics_listen="127.0.0.1:0")
    async with await server.connect("native") as client:
        await client.lease(100, 1000)
        await client.lease(100, 1200)
    mock_clock.jump(1.25)  # the expiry task runs now: 250 and 50 ms after the deadlines
    await trio.testing.wait_all_tasks_blocked()
    samples = await scrape(server)

    def bucket(le: str) -> float:
        return samples[("memlease_expiry_lag_seconds_bucket", (("le", le),))]

    assert (bucket("0.025"), bucket("0.05"), bucket("0.1"), bucket("0.25")) == (0, 1, 1, 2)
    assert bucket("+Inf") == samples[("memlease_expiry_lag_seconds_count", ())] == 2
    assert samples[("memlease_expiry_lag_seconds_sum", ())] == pytest.approx(0.3, abs=1e-5)


async def test_other_paths_get_404_and_other_methods_405(start_server: StartServer) -> None:
    server = await start_server("native", metrics_listen="127.0.0.1:0")
    status, _, body = await http_get(server, "/")
    assert (status, body) == (404, b"not found: the metrics are at /metrics\n")
    assert (await http_get(server, "/metrics/x"))[0] == 404
    status, headers, _ = await http_get(server, "/metrics", method="POST")
    assert (status, headers[b"allow"]) == (405, b"GET")
    assert (await http_get(server, "/metrics?name=x"))[0] == 200


async def test_a_client_that_sends_nothing_is_cut_after_the_request_timeout(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("native", metrics_listen="127.0.0.1:0", request_timeout=3.0)
    stream = await trio.open_tcp_stream(*server.address("metrics"))
    async with stream:
        started = trio.current_time()
        assert await stream.receive_some(1024) == b""
        assert trio.current_time() - started == pytest.approx(3.0)
    assert (await http_get(server))[0] == 200


async def test_a_huge_header_gets_431_and_the_connection_closed(start_server: StartServer) -> None:
    # A request timeout of an hour: the cut within fail_after's 10 s is the header cap's.
    server = await start_server("native", metrics_listen="127.0.0.1:0", request_timeout=3600.0)
    stream = await trio.open_tcp_stream(*server.address("metrics"))
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        reply = b""
        with trio.fail_after(10):
            try:
                while sent < 10 * MAX_HEADER_BYTES:  # far past the cap, never a whole head
                    await stream.send_all(b"a" * 1024)
                    sent += 1024
            except trio.BrokenResourceError:
                pass  # the server closed with our bytes unread: a reset
            try:
                while chunk := await stream.receive_some(65536):
                    reply += chunk
            except trio.BrokenResourceError:
                pass
    # The 431 comes first, unless the reset of the close (our bytes left unread) beat it.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 ")
    assert (await http_get(server))[0] == 200


async def test_connections_past_the_cap_are_closed_at_once(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("native", metrics_listen="127.0.0.1:0", request_timeout=3.0)
    address = server.address("metrics")
    held = [await trio.open_tcp_stream(*address) for _ in range(MAX_METRICS_CONNECTIONS)]
    await trio.testing.wait_all_tasks_blocked()
    extra = await trio.open_tcp_stream(*address)
    started = trio.current_time()
    assert await extra.receive_some(1024) == b""
    assert trio.current_time() == started
    for stream in [*held, extra]:
        await stream.aclose()
    assert (await http_get(server))[0] == 200


def test_metrics_are_off_by_default_and_a_port_alone_means_loopback() -> None:
    assert load_config().metrics_listen is None
    assert parse_metrics_address("9100") == ("127.0.0.1", 9100)
    assert parse_metrics_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_metrics_address("[::1]:9100") == ("::1", 9100)
    assert load_config(None, {"metrics_listen": "9100"}).metrics_listen == "9100"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("host:port", "port 'port' is not a number"),
        ("::1:9100", "write an IPv6 address in brackets"),
        ("127.0.0.1:70000", "a port is a number from 0 to 65535"),
        (":9100", "expected HOST:PORT or PORT"),
    ],
)
def test_a_bad_metrics_address_is_refused_naming_the_flag(value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"--metrics = '{value}': {reason}"):
        load_config(None, {"metrics_listen": value})


def test_the_config_file_key_is_read(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[metrics]\nlisten = "127.0.0.1:9100"\n')
    assert load_config(path).metrics_listen == "127.0.0.1:9100"


def closed(samples: Samples, reason: str) -> float:
    return samples[("memlease_connections_closed_total", (("reason", reason),))]


async def test_closed_connections_are_counted_by_reason(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(
        "native", metrics_listen="127.0.0.1:0", idle_timeout=60.0, max_connections=2
    )
    async with await server.connect("native") as client:
        await client.stats()
    garbage = await server.open_socket("native")
    await garbage.send_all(b"\xff" * 64)
    with trio.fail_after(5):  # before the request timeout: cut for its bytes
        while await garbage.receive_some(1024):
            pass  # an error reply, then the close
    await garbage.aclose()
    idle = await server.open_socket("native")
    held = await server.open_socket("native")
    await trio.testing.wait_all_tasks_blocked()
    refused = await server.open_socket("native")  # past max_connections: closed on accept
    assert await refused.receive_some(1024) == b""
    await held.aclose()
    await trio.sleep(61)  # the idle one is cut
    assert await idle.receive_some(1024) == b""
    samples = await scrape(server)
    assert closed(samples, "client") == 2  # the stats client and the held one
    assert closed(samples, "bad_input") == 1
    assert closed(samples, "limit") == 1
    assert closed(samples, "idle") == 1
    assert closed(samples, "request_timeout") == 0


def test_metrics_with_shards_give_each_shard_the_metrics_port_plus_its_index() -> None:
    config = load_config(None, {"metrics_listen": "9100", "shards": "2", "listeners": ["uuid=0"]})
    shards = shard_configs(config)
    assert [shard.metrics_listen for shard in shards] == ["127.0.0.1:9100", "127.0.0.1:9101"]
