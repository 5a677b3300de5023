"""One memory budget for what connections hold beyond the arena (memlease/server/budget.py):
large messages being received and replies not yet taken never add up past it. Past it, a
connection that wants to read more waits, and a large reply is refused with SERVER_BUSY."""

from __future__ import annotations

from memlease.core.errors import ErrorCode
from memlease.core.messages import (
    ErrorReply,
    GetRequest,
    Granted,
    LeaseRequest,
    ReadRequest,
    SetRequest,
)
from memlease.core.service import Service
from memlease.protocol import DEFAULT_MAX_MESSAGE, load_protocols
from memlease.server.budget import RECEIVE_ROOM, Holding, MemoryBudget
from memlease.server.connection import ANSWER_ROOM, Connection, Limits

REGISTRY = load_protocols(warn=False)
LIMITS = Limits(DEFAULT_MAX_MESSAGE, request_timeout=10.0, idle_timeout=60.0)
BIG = 4 << 20


def _connection(service: Service, budget: MemoryBudget) -> Connection:
    codec = REGISTRY.get("network").server_codec(DEFAULT_MAX_MESSAGE)
    return Connection(
        codec, service, LIMITS, 0.0, peer="p", protocol="network", budget=budget
    )


def _wire(*requests: object) -> bytes:
    client = REGISTRY.get("network").client_codec(DEFAULT_MAX_MESSAGE)
    return b"".join(client.encode_request(r) for r in requests)  # type: ignore[arg-type]


def _big_lease(service: Service) -> int:
    granted = service.handle(LeaseRequest(BIG, 60_000), 0.0)
    assert isinstance(granted, Granted) and isinstance(granted.lease_id, int)
    return granted.lease_id


def test_a_budget_gives_what_fits_and_counts_what_does_not() -> None:
    room = RECEIVE_ROOM
    budget = MemoryBudget(10 * room)
    holding = Holding(budget)
    assert holding.take_input(6 * room) and not holding.take_input(5 * room)
    assert holding.input_needed(8 * room) and budget.held == 8 * room
    assert holding.input_needed(7 * room) and budget.held == 8 * room  # a little over: kept
    assert holding.input_needed(room) and budget.held == room  # far over: given back
    holding.give_all()
    assert budget.held == 0 and budget.refused == 1


def test_a_reply_left_unsent_is_held_until_the_client_takes_it() -> None:
    service = Service.create(16 << 20)
    lease_id = _big_lease(service)
    budget = MemoryBudget(2 * RECEIVE_ROOM + BIG + BIG // 2)  # one large reply, not two
    first, second = _connection(service, budget), _connection(service, budget)
    assert first.may_receive() and second.may_receive()
    first.received(_wire(GetRequest(lease_id)))
    second.received(_wire(GetRequest(lease_id)))
    out = first.next_output(0.0)
    assert any(type(part) is memoryview for part in out)  # sent from the lease
    first.send_held(BIG)  # the client took almost none of it: held until it does
    assert budget.held <= budget.limit
    client = REGISTRY.get("network").client_codec(DEFAULT_MAX_MESSAGE)
    client.encode_request(GetRequest(lease_id))
    client.feed(b"".join(second.next_output(0.0)))
    busy = client.next_reply()
    assert isinstance(busy, ErrorReply) and busy.code is ErrorCode.SERVER_BUSY
    first.send_done(0.0)  # the client took it: the memory is given back
    second.received(_wire(GetRequest(lease_id)))
    assert any(type(part) is memoryview for part in second.next_output(0.0))


def test_past_the_budget_a_large_reply_is_refused_not_held() -> None:
    service = Service.create(16 << 20)
    lease_id = _big_lease(service)
    budget = MemoryBudget(ANSWER_ROOM + RECEIVE_ROOM + BIG // 2)  # no room for the reply
    connection = _connection(service, budget)
    assert connection.may_receive()
    connection.received(_wire(GetRequest(lease_id)))
    client = REGISTRY.get("network").client_codec(DEFAULT_MAX_MESSAGE)
    client.encode_request(GetRequest(lease_id))
    client.feed(b"".join(connection.next_output(0.0)))
    reply = client.next_reply()
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.SERVER_BUSY
    assert "limits.connection_memory" in reply.message
    assert budget.held <= budget.limit


def test_a_large_message_gets_no_buffer_of_its_own_without_room_and_still_arrives() -> None:
    service = Service.create(16 << 20)
    lease_id = _big_lease(service)
    budget = MemoryBudget(3 * RECEIVE_ROOM + ANSWER_ROOM)  # far less than the message
    connection = _connection(service, budget)
    wire = _wire(SetRequest(lease_id, b"\x05" * BIG), GetRequest(lease_id))
    sent = 0
    waited = 0
    while sent < len(wire):
        if not connection.may_receive():
            waited += 1  # the driver would wait for memory given back; here, give it all
            break
        piece = wire[sent : sent + RECEIVE_ROOM]
        connection.received(piece)
        sent += len(piece)
        assert budget.held <= budget.limit
    assert waited == 1 and sent < len(wire)  # back pressure before the budget was passed
    connection.release()
    assert budget.held == 0


def test_closing_gives_everything_back() -> None:
    service = Service.create(16 << 20)
    budget = MemoryBudget(16 << 20)
    connection = _connection(service, budget)
    assert connection.may_receive()
    connection.received(_wire(SetRequest(_big_lease(service), b"x" * 1000))[:100])
    assert budget.held > 0
    connection.release()
    assert budget.held == 0


def test_without_a_budget_nothing_waits() -> None:
    service = Service.create(16 << 20)
    codec = REGISTRY.get("network").server_codec(DEFAULT_MAX_MESSAGE)
    connection = Connection(codec, service, LIMITS, 0.0, peer="p", protocol="network")
    assert connection.may_receive() and connection.may_answer()
    connection.received(_wire(GetRequest(_big_lease(service))))
    assert isinstance(connection.next_output(0.0), list)


def test_what_a_tls_stream_holds_of_a_blocked_send_counts_too() -> None:
    service = Service.create(16 << 20)
    budget = MemoryBudget(ANSWER_ROOM + 400_000)
    connection = _connection(service, budget)
    connection.send_buffers = 300_000  # as the driver sets it for a TLS stream
    assert connection.may_answer()
    budget.held = 200_000
    assert not connection.may_answer()  # a batch would fit alone, not with the stream's share
    budget.held = 0
    connection.send_held(100_000)
    assert budget.held == 400_000
    connection.send_done(0.0)
    assert budget.held == 0


def test_a_large_read_is_refused_too_when_it_finds_no_room() -> None:
    service = Service.create(16 << 20)
    lease_id = _big_lease(service)
    budget = MemoryBudget(ANSWER_ROOM + RECEIVE_ROOM + BIG // 2)
    connection = _connection(service, budget)
    assert connection.may_receive()
    connection.received(_wire(ReadRequest(lease_id, 0, BIG)))
    assert connection.may_answer()
    client = REGISTRY.get("network").client_codec(DEFAULT_MAX_MESSAGE)
    client.encode_request(ReadRequest(lease_id, 0, BIG))
    client.feed(b"".join(connection.next_output(0.0)))
    reply = client.next_reply()
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.SERVER_BUSY


def test_an_idle_connection_gives_back_its_last_large_message() -> None:
    service = Service.create(16 << 20)
    lease_id = _big_lease(service)
    budget = MemoryBudget(64 << 20)
    connection = _connection(service, budget)
    wire = _wire(SetRequest(lease_id, b"\x05" * (200_000)))
    for start in range(0, len(wire), RECEIVE_ROOM):
        assert connection.may_receive()
        connection.received(wire[start : start + RECEIVE_ROOM])
        while connection.next_output(0.0):
            pass
        connection.batch_done(0.0)
    assert connection.may_receive()  # waiting for the next message now
    assert budget.held <= 2 * RECEIVE_ROOM  # not the 200 KB message it no longer needs


def test_no_batch_is_built_without_room_for_it() -> None:
    service = Service.create(16 << 20)
    budget = MemoryBudget(4 << 20)
    connection = _connection(service, budget)
    assert connection.may_answer()
    budget.held = budget.limit - ANSWER_ROOM + 1  # others hold all but less than a batch
    assert not connection.may_answer()  # the driver waits before building replies
    connection.send_buffers = 1  # and a TLS stream's share counts too
    budget.held = budget.limit - ANSWER_ROOM
    assert not connection.may_answer()
