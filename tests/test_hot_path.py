"""Gets and sets served without message objects (``serve_hot``) give the same bytes, and leave
the same lease contents, as the general path: decode, ``Service.handle``, ``encode_reply``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memlease.core.arena import BuddyArena
from memlease.core.errors import ProtocolError
from memlease.core.leases import LeaseTable
from memlease.core.messages import (
    GetRequest,
    IdKind,
    LeaseRequest,
    ReleaseRequest,
    Request,
    SetRequest,
    StatRequest,
)
from memlease.core.service import SHARE_AT, Service
from memlease.protocol import DEFAULT_MAX_MESSAGE, ProtocolSpec, load_protocols

REGISTRY = load_protocols(warn=False)
HOT_PROTOCOLS = ["native", "network"]
MAX_MESSAGE = 4096
BUDGET = 1 << 20

Out = list[bytes | bytearray | memoryview]


def _service(share_blocks: bool = False) -> tuple[Service, list[int]]:
    """A service with live leases of 8, 64 and 200 bytes and one that ended, at time 1.0."""
    ids = iter(range(1000, 2000))
    table = LeaseTable(BuddyArena(1 << 20), max_ttl_ms=60_000, int_ids=lambda: next(ids))
    service = Service(table, share_blocks=share_blocks)
    leases = [service.handle(LeaseRequest(size, 5_000), 1.0).lease_id for size in (8, 64, 200)]
    gone = service.handle(LeaseRequest(16, 1), 1.0).lease_id  # ends at 1.001
    return service, [*leases, gone]  # type: ignore[list-item]


def _general(spec: ProtocolSpec, service: Service, chunks: list[bytes], now: float) -> bytes:
    codec = spec.server_codec(MAX_MESSAGE)
    out: Out = []
    try:
        for chunk in chunks:
            codec.feed(chunk)
            while (request := codec.next_request()) is not None:
                out.append(codec.encode_reply(service.handle(request, now)))
    except ProtocolError as exc:
        out.append(f"error: {exc}".encode())
    return b"".join(out)


def _hot(
    spec: ProtocolSpec, service: Service, chunks: list[bytes], now: float
) -> tuple[bytes, int]:
    """The exchange loop's order: serve_hot, then one message the general way, repeat.
    Also returns how many bytes serve_hot appended in all."""
    codec = spec.server_codec(MAX_MESSAGE)
    ops = service.hot_ops()
    out: Out = []
    hot_bytes = 0
    try:
        for chunk in chunks:
            codec.feed(chunk)
            while True:
                hot_bytes += codec.serve_hot(ops, now, out, BUDGET)  # type: ignore[attr-defined]
                request = codec.next_request()
                if request is None:
                    break
                out.append(codec.encode_reply(service.handle(request, now)))
    except ProtocolError as exc:
        out.append(f"error: {exc}".encode())
    return b"".join(out), hot_bytes


def _contents(service: Service, ids: list[int], now: float) -> list[bytes | None]:
    found: list[bytes | None] = []
    for lease_id in ids:
        found.append(service.table.peek(lease_id, now, 1 << 30))
    return found


def _requests(ids: list[int]) -> st.SearchStrategy[list[Request]]:
    lease_id = st.sampled_from([*ids, 7, 0x7FFFFFFF])
    data = st.binary(max_size=260)
    one = st.one_of(
        st.builds(GetRequest, lease_id),
        st.builds(GetRequest, lease_id),
        st.builds(SetRequest, lease_id, data),
        st.builds(SetRequest, lease_id, data),
        st.builds(StatRequest, lease_id),
        st.builds(ReleaseRequest, lease_id),
        st.builds(LeaseRequest, st.integers(1, 300), st.integers(1, 9_000)),
    )
    return st.lists(one, max_size=40)


def _wire(spec: ProtocolSpec, requests: list[Request]) -> bytes:
    client = spec.client_codec(DEFAULT_MAX_MESSAGE)
    return b"".join(client.encode_request(r) for r in requests)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


@pytest.mark.parametrize("name", HOT_PROTOCOLS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), cuts=st.lists(st.integers(0, 20_000), max_size=6))
def test_hot_path_answers_as_the_general_path_does(
    name: str, data: st.DataObject, cuts: list[int]
) -> None:
    spec = REGISTRY.get(name)
    now = 1.002  # the short lease has ended
    general_service, ids = _service()
    hot_service, same_ids = _service()
    assert ids == same_ids
    requests = data.draw(_requests(ids))
    wire = _wire(spec, requests)
    # Garbage after the requests ends both paths with the same protocol error.
    tail = data.draw(st.sampled_from([b"", b"\x00" * 3, b"\xff" * 16]))
    chunks = _chunked(wire + tail, cuts)
    expected = _general(spec, general_service, chunks, now)
    got, _ = _hot(spec, hot_service, chunks, now)
    assert got == expected
    assert _contents(hot_service, ids, now) == _contents(general_service, ids, now)


@pytest.mark.parametrize("name", HOT_PROTOCOLS)
def test_pipelined_gets_and_sets_take_the_hot_path(name: str) -> None:
    spec = REGISTRY.get(name)
    service, ids = _service()
    requests: list[Request] = []
    for lease_id in ids[:3]:
        requests += [SetRequest(lease_id, b"v" * 8), GetRequest(lease_id)]
    wire = _wire(spec, requests)
    expected = _general(spec, _service()[0], [wire], 1.0)
    got, hot_bytes = _hot(spec, service, [wire], 1.0)
    assert got == expected
    assert hot_bytes == len(got)  # every reply came from serve_hot


@pytest.mark.parametrize("name", HOT_PROTOCOLS)
def test_serve_hot_stops_at_what_it_cannot_answer(name: str) -> None:
    spec = REGISTRY.get(name)
    service, ids = _service()
    codec = spec.server_codec(MAX_MESSAGE)
    ops = service.hot_ops()
    wire = _wire(spec, [GetRequest(ids[0]), StatRequest(ids[0]), GetRequest(ids[0])])
    codec.feed(wire)
    out: Out = []
    assert codec.serve_hot(ops, 1.0, out, BUDGET) > 0  # type: ignore[attr-defined]
    assert len(out) == 2  # header and data of the first get only
    assert isinstance(codec.next_request(), StatRequest)
    # an unknown lease: declined, left for the general path to refuse with its reason
    codec.feed(_wire(spec, [GetRequest(ids[0]), GetRequest(424242)]))
    out.clear()
    codec.serve_hot(ops, 1.0, out, BUDGET)  # type: ignore[attr-defined]
    assert len(out) == 4
    assert codec.next_request() == GetRequest(424242)


@pytest.mark.parametrize("name", HOT_PROTOCOLS)
def test_serve_hot_stops_once_its_budget_is_spent(name: str) -> None:
    spec = REGISTRY.get(name)
    service, ids = _service()
    codec = spec.server_codec(MAX_MESSAGE)
    codec.feed(_wire(spec, [GetRequest(ids[2])] * 10))  # 200-byte replies
    out: Out = []
    appended = codec.serve_hot(service.hot_ops(), 1.0, out, 500)  # type: ignore[attr-defined]
    assert 500 <= appended < 3 * 230
    assert len(out) == 6  # three replies, then it stopped
    assert codec.buffered() > 0  # type: ignore[attr-defined]


def test_large_gets_are_left_for_the_shared_block_path() -> None:
    spec = REGISTRY.get("native")
    service = Service.create(1 << 20)
    service.share_blocks = True
    big = service.handle(LeaseRequest(SHARE_AT, 5_000), 1.0).lease_id
    small = service.handle(LeaseRequest(SHARE_AT - 1, 5_000), 1.0).lease_id
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    codec.feed(_wire(spec, [GetRequest(small), GetRequest(big)]))
    out: Out = []
    codec.serve_hot(service.hot_ops(), 1.0, out, BUDGET)  # type: ignore[attr-defined]
    assert len(out) == 2 and len(out[1]) == SHARE_AT - 1
    assert codec.next_request() == GetRequest(big)


def test_uuid_ids_take_the_general_path() -> None:
    spec = REGISTRY.get("uuid")
    service = Service.create(1 << 20)
    lease_id = service.handle(LeaseRequest(8, 5_000, IdKind.UUID), 1.0).lease_id
    codec = spec.server_codec(MAX_MESSAGE)
    codec.feed(_wire(spec, [GetRequest(lease_id)]))
    assert codec.serve_hot(service.hot_ops(), 1.0, [], BUDGET) == 0  # type: ignore[attr-defined]
    assert codec.next_request() == GetRequest(lease_id)


def test_feeding_after_serve_hot_grows_the_buffer() -> None:
    # serve_hot views the buffer to copy sets; the view must be gone when it returns, or the
    # next feed could not resize the buffer.
    spec = REGISTRY.get("native")
    service, ids = _service()
    codec = spec.server_codec(MAX_MESSAGE)
    wire = _wire(spec, [SetRequest(ids[1], b"x" * 64)])
    codec.feed(wire[:-1])
    assert codec.serve_hot(service.hot_ops(), 1.0, [], BUDGET) == 0  # type: ignore[attr-defined]
    codec.feed(wire[-1:] + wire)
    out: Out = []
    codec.serve_hot(service.hot_ops(), 1.0, out, BUDGET)  # type: ignore[attr-defined]
    assert len(out) == 2
    assert service.table.get(ids[1], 1.0) == b"x" * 64


@pytest.mark.parametrize("name", HOT_PROTOCOLS)
@pytest.mark.parametrize("claimed", [0, 7, 9, 1 << 20])
def test_a_set_whose_length_fields_disagree_fails_as_on_the_general_path(
    name: str, claimed: int
) -> None:
    spec = REGISTRY.get(name)
    service, ids = _service()
    good = _wire(spec, [SetRequest(ids[1], b"z" * 8)])
    forms = spec.server_codec(MAX_MESSAGE)._hot  # type: ignore[attr-defined]
    bad = bytearray(good)
    header = len(good) - 8 - forms.set_head.size
    forms.set_head.pack_into(bad, header, ids[1], claimed)  # the frame still carries 8
    wire = [good + bytes(bad) + good]
    expected = _general(spec, _service()[0], wire, 1.0)
    got, _ = _hot(spec, service, wire, 1.0)
    assert b"error: " in expected
    assert got == expected
    assert service.table.get(ids[1], 1.0)[:8] == b"z" * 8
