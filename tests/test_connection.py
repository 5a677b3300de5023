"""The connection's rules, sans-IO (memlease/server/connection.py): fed bytes and the time, it
answers, says when its limit ends and why it closed. No socket, no trio, no clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from time_limits_model import (
    IDLE_TIMEOUT,
    PAUSES,
    REQUEST_TIMEOUT,
    SCHEDULES,
    model_close,
    schedule_of,
)

from memlease.core.errors import ErrorCode
from memlease.core.messages import (
    OPS,
    Data,
    Done,
    EndReason,
    ErrorReply,
    GetRequest,
    Granted,
    IdKind,
    IdList,
    LeaseRequest,
    Notice,
    Op,
    ReleaseRequest,
    Reply,
    Request,
    SetRequest,
    StatsRequest,
    WatchRequest,
)
from memlease.core.seconds_histogram import REQUEST_BOUNDS
from memlease.core.service import Service
from memlease.core.sessions import Session
from memlease.protocol import DEFAULT_MAX_MESSAGE, ServerCodec, load_protocols
from memlease.server.connection import (
    DECODE_MOST,
    MAX_MISSES,
    SEND_AT,
    SHUTDOWN_DRAIN,
    Connection,
    Ending,
    Limits,
    State,
)
from memlease.server.request_figures import RequestFigures

REGISTRY = load_protocols(warn=False)
LIMITS = Limits(DEFAULT_MAX_MESSAGE, request_timeout=REQUEST_TIMEOUT, idle_timeout=IDLE_TIMEOUT)


def _connection(protocol: str = "network", service: Service | None = None) -> Connection:
    service = service or Service.create(1 << 20)
    codec = REGISTRY.get(protocol).server_codec(DEFAULT_MAX_MESSAGE)
    return Connection(codec, service, LIMITS, 0.0, peer="test", protocol=protocol)


def _wire(protocol: str, *requests: Request) -> bytes:
    client = REGISTRY.get(protocol).client_codec(DEFAULT_MAX_MESSAGE)
    return b"".join(client.encode_request(r) for r in requests)


def _serve(connection: Connection, data: bytes, now: float) -> bytes:
    """What a driver does with a receive: feed it, send every output at once, end the batch."""
    connection.received(data)
    sent = b""
    while out := connection.next_output(now):
        sent += b"".join(out)
    connection.batch_done(now)
    return sent


def _replies(protocol: str, data: bytes) -> list[Reply]:
    client = REGISTRY.get(protocol).client_codec(DEFAULT_MAX_MESSAGE)
    client.feed(data)
    replies = []
    while (reply := client.next_reply()) is not None:
        replies.append(reply)
    return replies


def _closed_at(schedule: list[tuple[float, int]], frame: bytes) -> tuple[float, Ending | None]:
    """Drive a connection through ``schedule`` as the task would: when it closed, and why."""
    connection = _connection("native")
    stream = frame * (sum(size for _, size in schedule) // len(frame))
    now, sent = 0.0, 0
    for pause, size in schedule:
        now += pause
        if now >= connection.due:
            break
        _serve(connection, stream[sent : sent + size], now)
        sent += size
    ends = connection.due
    connection.time_is(ends - 0.001)
    assert connection.ending is None, "closed before its limit"
    connection.time_is(ends)
    return ends, connection.ending


def test_random_schedules_close_exactly_when_the_model_says() -> None:
    frame = _wire("native", StatsRequest())
    rng = random.Random(20261130)
    for _ in range(SCHEDULES):
        schedule = schedule_of(rng, len(frame))
        ends, ending = _closed_at(schedule, frame)
        expected, partial = model_close(schedule, len(frame))
        assert ends == pytest.approx(expected), schedule
        assert ending is (Ending.REQUEST if partial else Ending.IDLE), schedule


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(PAUSES), st.integers(min_value=1, max_value=40)),
        min_size=1,
        max_size=12,
    )
)
def test_any_chunking_closes_when_the_model_says(chunks: list[tuple[float, int]]) -> None:
    frame = _wire("native", StatsRequest())
    total = sum(size for _, size in chunks)
    whole = total - total % len(frame)
    schedule, used = [], 0
    for pause, size in chunks:  # cut to whole frames: the model sends nothing else
        size = min(size, whole - used)
        if size:
            schedule.append((pause, size))
            used += size
    if not schedule:
        return
    ends, ending = _closed_at(schedule, frame)
    expected, partial = model_close(schedule, len(frame))
    assert ends == pytest.approx(expected)
    assert ending is (Ending.REQUEST if partial else Ending.IDLE)


def test_the_idle_limit_counts_from_the_end_of_a_blocked_send() -> None:
    connection = _connection()
    connection.received(_wire("network", StatsRequest()))
    assert connection.next_output(1.0)
    connection.send_blocked(1.0)
    assert connection.due == 1.0 + REQUEST_TIMEOUT and connection.state is State.SENDING
    connection.time_is(1.0 + REQUEST_TIMEOUT)
    assert connection.ending is Ending.SEND


def test_a_send_that_got_through_leaves_the_connection_idle_from_its_end() -> None:
    connection = _connection()
    connection.received(_wire("network", StatsRequest()))
    connection.next_output(1.0)
    connection.send_blocked(1.0)
    connection.send_done(2.0)
    assert connection.next_output(2.0) == []
    connection.batch_done(2.0)
    assert connection.due == 2.0 + IDLE_TIMEOUT


def test_bad_input_gets_an_error_reply_then_the_connection_ends() -> None:
    connection = _connection()
    sent = _serve(connection, b"\x09" * 16, 0.0)
    (reply,) = _replies("network", sent)
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.BAD_REQUEST
    assert connection.ending is Ending.BAD_INPUT and "version" in connection.detail


class OnlyRequiredCodec(ServerCodec):
    """The network codec seen through the four methods a codec must give: the connection
    then decodes through ServerCodec's own next_requests."""

    def __init__(self, max_message: int) -> None:
        self._inner = REGISTRY.get("network").server_codec(max_message)

    def feed(self, data: bytes) -> None:
        self._inner.feed(data)

    def next_request(self) -> Request | None:
        return self._inner.next_request()

    def encode_reply(self, reply: Reply) -> bytes:
        return self._inner.encode_reply(reply)

    def buffered(self) -> int:
        return self._inner.buffered()


@pytest.mark.parametrize("codec", ["network", "only the required methods"])
def test_requests_before_bad_input_are_answered_then_the_error_and_the_end(codec: str) -> None:
    service = Service.create(1 << 20)
    granted = service.handle(LeaseRequest(8, 10_000), 0.0)
    assert isinstance(granted, Granted)
    lease_id = granted.lease_id
    server_codec = (
        OnlyRequiredCodec(DEFAULT_MAX_MESSAGE)
        if codec != "network"
        else REGISTRY.get("network").server_codec(DEFAULT_MAX_MESSAGE)
    )
    connection = Connection(server_codec, service, LIMITS, 0.0, peer="t", protocol="network")
    wire = _wire("network", SetRequest(lease_id, b"12345678"), GetRequest(lease_id))
    replies = _replies("network", _serve(connection, wire + b"\x7f" * 16, 0.0))
    assert [type(r) for r in replies] == [Done, Data, ErrorReply]
    assert replies[1].data == b"12345678"  # type: ignore[union-attr]
    assert replies[2].code is ErrorCode.BAD_REQUEST  # type: ignore[union-attr]
    assert connection.ending is Ending.BAD_INPUT and "version 127" in connection.detail


def test_a_receive_of_many_more_requests_than_decoded_at_once_is_answered_in_order() -> None:
    service = Service.create(1 << 20)
    granted = service.handle(LeaseRequest(4, 10_000), 0.0)
    assert isinstance(granted, Granted)
    lease_id = granted.lease_id
    connection = _connection("network", service)
    values = [i.to_bytes(4, "big") for i in range(2 * DECODE_MOST + 3)]
    pairs = [(SetRequest(lease_id, v), GetRequest(lease_id)) for v in values]
    replies = _replies("network", _serve(connection, _wire("network", *sum(pairs, ())), 0.0))
    # Each get sees the set just before it: nothing is handled ahead of its turn.
    assert [r.data for r in replies[1::2]] == values  # type: ignore[union-attr]
    assert len(replies) == 2 * len(values) and connection.ending is None


def test_the_client_closing_ends_the_connection() -> None:
    connection = _connection()
    connection.receive_buffer()
    connection.received(b"")
    assert connection.ending is Ending.CLIENT


def test_replies_go_out_in_pieces_of_about_send_at_bytes() -> None:
    service = Service.create(4 << 20)
    granted = service.handle(LeaseRequest(60_000, 10_000, IdKind.UUID), 0.0)
    assert isinstance(granted, Granted)
    connection = _connection("uuid", service)
    gets = [GetRequest(granted.lease_id)] * 40  # 40 * 60,000 B: a copy each (below SHARE_AT)
    connection.received(_wire("uuid", *gets))
    pieces = []
    while out := connection.next_output(0.0):
        pieces.append(sum(map(len, out)))
    assert len(pieces) == 3 and all(size <= SEND_AT + 60_100 for size in pieces)


def test_a_receive_after_a_batch_sent_in_pieces_is_answered_from_its_first_request() -> None:
    service = Service.create(4 << 20)
    granted = service.handle(LeaseRequest(60_000, 10_000), 0.0)
    assert isinstance(granted, Granted)
    lease_id = granted.lease_id
    connection = _connection("network", service)
    gets = [GetRequest(lease_id)] * 40  # three pieces of about SEND_AT bytes
    assert len(_replies("network", _serve(connection, _wire("network", *gets), 0.0))) == 40
    then = [SetRequest(lease_id, b"after"), GetRequest(lease_id)]
    replies = _replies("network", _serve(connection, _wire("network", *then), 0.1))
    assert replies[0] == Done(Op.SET, lease_id, 2)
    assert isinstance(replies[1], Data) and replies[1].data[:5] == b"after"


def test_a_pushed_message_goes_between_two_pipelined_replies_intact() -> None:
    service = Service.create(1 << 20)
    granted = service.handle(LeaseRequest(64, 10_000), 0.0)
    assert isinstance(granted, Granted)
    lease_id = granted.lease_id
    connection = _connection("network", service)
    first, second = SetRequest(lease_id, b"hello"), GetRequest(lease_id)
    sent = _serve(connection, _wire("network", first), 0.0)
    connection.push(Done(Op.RELEASE, 12345))  # a notice, between the two replies
    sent += _serve(connection, _wire("network", second), 0.1)
    replies = _replies("network", sent)
    assert replies[0] == Done(Op.SET, lease_id, 2)
    assert replies[1] == Done(Op.RELEASE, 12345)
    assert isinstance(replies[2], Data) and replies[2].data == b"hello" + bytes(59)


def test_a_push_does_not_move_the_clients_idle_limit() -> None:
    connection = _connection()
    _serve(connection, _wire("network", StatsRequest()), 1.0)
    due = connection.due
    connection.push(Done(Op.RELEASE, 7))
    assert connection.has_output
    assert connection.next_output(2.0)
    connection.batch_done(2.0)
    assert connection.due == due


def test_shutdown_gives_a_waiting_connection_the_drain_and_a_busy_one_the_grace() -> None:
    waiting = _connection()
    waiting.receive_buffer()  # waiting for bytes, nothing of a message in
    waiting.shut_down(1.0, grace_until=6.0)
    assert waiting.due == 1.0 + SHUTDOWN_DRAIN
    waiting.time_is(waiting.due)
    assert waiting.ending is Ending.SHUTDOWN and waiting.detail == ""

    receiving = _connection()
    stats = _wire("network", StatsRequest())
    _serve(receiving, stats[:3], 0.9)  # a message begun
    receiving.receive_buffer()
    receiving.shut_down(1.0, grace_until=6.0)
    assert receiving.due == 0.9 + REQUEST_TIMEOUT  # its own limit is earlier than the grace
    _serve(receiving, stats[3:], 1.5)
    assert receiving.ending is Ending.SHUTDOWN  # answered, then closed


def test_a_message_still_arriving_when_the_grace_ends_is_cut_off() -> None:
    connection = _connection()
    stats = _wire("network", StatsRequest())
    connection.shut_down(0.0, grace_until=1.0)
    _serve(connection, stats + stats[:3], 0.05)  # one answered, the next begun in the drain
    assert connection.ending is None and connection.due == 1.0
    connection.time_is(1.0)
    assert connection.ending is Ending.SHUTDOWN and connection.detail == "sending a message"


def test_a_blocked_send_is_bounded_from_its_last_progress() -> None:
    connection = _connection()
    connection.received(_wire("network", StatsRequest()))
    connection.next_output(1.0)
    connection.send_blocked(1.0)
    connection.send_progress(1.0 + REQUEST_TIMEOUT - 0.5)  # the client took some
    connection.time_is(1.0 + REQUEST_TIMEOUT)
    assert connection.ending is None
    assert connection.due == 1.0 + 2 * REQUEST_TIMEOUT - 0.5
    assert connection.wait_until == float("inf")  # the send's own waits keep the bound
    connection.shut_down(2.0, grace_until=4.0)
    assert connection.wait_until == 4.0


def test_a_connection_asking_for_too_many_unknown_ids_in_a_second_is_closed() -> None:
    connection = _connection("network")
    misses = [GetRequest(1_000_000 + i) for i in range(MAX_MISSES)]
    sent = _serve(connection, _wire("network", *misses), 0.0)
    assert connection.ending is None and len(_replies("network", sent)) == MAX_MISSES
    sent = _serve(connection, _wire("network", GetRequest(7), StatsRequest()), 0.5)
    (reply,) = _replies("network", sent)  # answered, and nothing after it
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.NOT_FOUND
    assert connection.ending is Ending.GUESSING and "unknown ids" in connection.detail


def test_misses_spread_over_seconds_are_not_guessing() -> None:
    connection = _connection("network")
    for second in range(3):
        misses = [GetRequest(1_000_000 + i) for i in range(MAX_MISSES)]
        _serve(connection, _wire("network", *misses), float(second))
        assert connection.ending is None


def _watching_connection(service: Service) -> tuple[Connection, Session]:
    session = Session()
    connection = Connection(
        REGISTRY.get("network").server_codec(DEFAULT_MAX_MESSAGE),
        service,
        LIMITS,
        0.0,
        peer="test",
        protocol="network",
        session=session,
        end_session=lambda s: service.end_session(s, 0.0),
        notices_sent=service.table.notices_sent,
    )
    session.notify = connection.push
    return connection, session


def test_a_notice_holds_its_watch_until_it_is_sent_or_dropped() -> None:
    service = Service.create(1 << 20, max_watches=3)
    table = service.table
    ids = table.grant_many(3, 32, 10_000, 0.0)
    connection, session = _watching_connection(service)
    table.watch(ids, session, 0.0)
    assert table.release_many(ids, 0.0) == []  # a burst: three notices queued at once
    assert (table.watches, table.notices_pending) == (0, 3)
    more = table.grant_many(3, 32, 10_000, 0.0)
    refused = service.handle(WatchRequest(more[:1]), 0.0, session)
    assert isinstance(refused, ErrorReply) and refused.code is ErrorCode.TOO_MANY
    assert connection.ending is None  # a burst does not end a connection
    assert len(_replies("network", b"".join(connection.next_output(0.0)))) == 3
    assert table.notices_pending == 0
    table.watch(more, session, 0.0)
    table.release_many(more, 0.0)
    connection.release()  # closed with its notices unsent: they go with it
    assert (table.watches, table.notices_pending) == (0, 0)


def test_a_notice_a_request_causes_goes_out_behind_that_requests_reply() -> None:
    service = Service.create(1 << 20)
    connection, _ = _watching_connection(service)
    granted = service.handle(LeaseRequest(64, 10_000), 0.0)
    assert isinstance(granted, Granted)
    lease_id = granted.lease_id
    sent = _serve(connection, _wire("network", WatchRequest([lease_id])), 0.0)
    sent += _serve(connection, _wire("network", ReleaseRequest(lease_id)), 0.1)
    assert _replies("network", sent) == [
        IdList(Op.WATCH, []),
        Done(Op.RELEASE, lease_id),
        Notice(lease_id, EndReason.RELEASED),
    ]


# ---------------------------------------------------------------------- metrics figures


def _timed_connection(service: Service, figures: RequestFigures) -> Connection:
    codec = REGISTRY.get("network").server_codec(DEFAULT_MAX_MESSAGE)
    return Connection(
        codec, service, LIMITS, 0.0, peer="test", protocol="network", figures=figures
    )


def _count(figures: RequestFigures, op: Op) -> int:
    return figures.times[OPS.index(op)].count


def test_each_request_is_timed_from_its_last_byte_to_its_reply_handed_to_the_socket() -> None:
    service, figures = Service.create(1 << 20), RequestFigures()
    connection = _timed_connection(service, figures)
    assert connection.timed and not _connection().timed
    lease = service.handle(LeaseRequest(64, 60_000), 0.0).lease_id  # type: ignore[union-attr]
    connection.received(_wire("network", GetRequest(lease), SetRequest(lease, b"x")))
    out = connection.next_output(1.0)
    assert len(out) == 2
    connection.replies_handed(1.0, 1.003)  # 3 ms after the bytes came
    connection.batch_done(1.003)
    get = figures.times[OPS.index(Op.GET)]
    assert get.count == 1 and get.total == pytest.approx(0.003)
    assert get.cumulative()[REQUEST_BOUNDS.index(0.002_5)][1] == 0
    assert get.cumulative()[REQUEST_BOUNDS.index(0.005)][1] == 1
    assert _count(figures, Op.SET) == 1 and _count(figures, Op.LEASE) == 0
    assert not figures.refused
    # The next batch counts from its own bytes, and only once.
    connection.received(_wire("network", GetRequest(lease)))
    connection.next_output(2.0)
    connection.replies_handed(2.0, 2.000_01)
    connection.replies_handed(2.0, 2.5)  # nothing more was answered
    connection.batch_done(2.5)
    assert get.count == 2 and get.total == pytest.approx(0.003_01)


def test_refusals_are_counted_by_op_and_code_and_a_large_batch_all_the_same() -> None:
    service, figures = Service.create(1 << 20), RequestFigures()
    connection = _timed_connection(service, figures)
    gets = [GetRequest(1_000_000 + i) for i in range(20)]
    connection.received(_wire("network", *gets, ReleaseRequest(7), StatsRequest()))
    while connection.next_output(0.0):
        connection.replies_handed(0.0, 0.000_02)
    assert _count(figures, Op.GET) == 20 and _count(figures, Op.STATS) == 1
    assert figures.times[OPS.index(Op.GET)].cumulative()[0] == (REQUEST_BOUNDS[0], 20)
    assert figures.refused == {
        (OPS.index(Op.GET), ErrorCode.NOT_FOUND): 20,
        (OPS.index(Op.RELEASE), ErrorCode.NOT_FOUND): 1,
    }


def test_a_connection_without_figures_counts_nothing_and_takes_no_note() -> None:
    connection = _connection()
    connection.received(_wire("network", StatsRequest()))
    connection.next_output(0.0)
    connection.replies_handed(0.0, 1.0)  # a driver may call it all the same
    assert connection._kinds is None and not connection._refused


class _FutureRequest:
    """A request of a type this server does not know, as a newer codec might give."""

    def __init__(self, op: object, lease_id: object) -> None:
        self.op = op
        self.lease_id = lease_id


class _FutureCodec(ServerCodec):
    """The native codec, giving ``future`` for each stats request."""

    def __init__(self, future: _FutureRequest) -> None:
        self.native = REGISTRY.get("native").server_codec(DEFAULT_MAX_MESSAGE)
        self.future = future

    def feed(self, data: bytes) -> None:
        self.native.feed(data)

    def next_request(self) -> Request | None:
        request = self.native.next_request()
        return self.future if type(request) is StatsRequest else request  # type: ignore[return-value]

    def encode_reply(self, reply: Reply) -> bytes:
        return self.native.encode_reply(reply)

    def buffered(self) -> int:
        return self.native.buffered()


@pytest.mark.parametrize(
    ("op", "lease_id"),
    [(Op.RENEW, 3), ("renew_all", "seven"), (None, None)],
    ids=["an-op-and-id", "its-own-op-and-id", "no-op-or-id"],
)
def test_a_request_type_the_server_does_not_know_is_refused_and_the_connection_goes_on(
    op: object, lease_id: object
) -> None:
    connection = Connection(
        _FutureCodec(_FutureRequest(op, lease_id)),
        Service.create(1 << 20),
        LIMITS,
        0.0,
        peer="test",
        protocol="native",
    )
    client = REGISTRY.get("native").client_codec(DEFAULT_MAX_MESSAGE)
    for request in (StatsRequest(), LeaseRequest(64, 1000)):
        client.encode_request(request)  # the client pairs replies with its requests
    sent = _serve(connection, _wire("native", StatsRequest(), LeaseRequest(64, 1000)), 1.0)
    client.feed(sent)
    refusal, granted = client.next_reply(), client.next_reply()
    assert isinstance(refusal, ErrorReply) and refusal.code is ErrorCode.UNSUPPORTED
    assert "_FutureRequest is not supported" in refusal.message
    assert refusal.op is (op if isinstance(op, Op) else None)
    assert isinstance(granted, Granted) and connection.ending is None
