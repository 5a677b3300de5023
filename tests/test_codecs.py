"""Properties every built-in codec keeps: round trips in any chunking, only ProtocolError or
need-more-bytes from arbitrary input, no allocation the input did not pay for, and bytes that
follow the construct declarations."""

from __future__ import annotations

import contextlib
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_native import NATIVE
from memlease_native import layout as native_layout
from memlease_network import NETWORK
from memlease_uuid import UUID
from memlease_wire.stats_fields import unpack_counts

from memlease.core.arena import MAP_CELLS
from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import (
    ArenaMapReply,
    ArenaMapRequest,
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    IdKind,
    LeaseInfo,
    LeaseRequest,
    Op,
    ReadRequest,
    ReleaseRequest,
    RenewRequest,
    Reply,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    WriteRequest,
)
from memlease.protocol import ProtocolSpec

SPECS = {spec.name: spec for spec in (NATIVE, NETWORK, UUID)}
FRAMES = {
    "native": (native_layout.REQUEST_FRAME, native_layout.REPLY_FRAME),
    "network": (NETWORK.server_codec.__self__.layouts.frame,) * 2,  # type: ignore[attr-defined]
    "uuid": (UUID.server_codec.__self__.layouts.frame,) * 2,  # type: ignore[attr-defined]
}
MAX = 1 << 16
FEW = settings(max_examples=40, deadline=None)

small = st.integers(0, 2**31 - 1)
wide = st.integers(0, 2**63 - 1)
payload = st.binary(max_size=300)


def ids_for(name: str) -> st.SearchStrategy[Any]:
    if name == "uuid":
        return st.uuids()
    return st.integers(1, 2**31 - 1)


def exchange(name: str) -> st.SearchStrategy[tuple[Request, Reply]]:
    """A request and a reply the service could give it."""
    ids = ids_for(name)
    kind = IdKind.UUID if name == "uuid" else IdKind.INT

    def refusal(op: Op, lease_id: Any) -> st.SearchStrategy[Reply]:
        return st.builds(
            ErrorReply, st.sampled_from(ErrorCode), st.text(max_size=40), st.just(op),
            st.just(lease_id),
        )  # fmt: skip

    def pair(lease_id: Any) -> st.SearchStrategy[tuple[Request, Reply]]:
        def answer(request: Request, ok: st.SearchStrategy[Reply]) -> Any:
            return st.tuples(st.just(request), ok | refusal(request.op, lease_id))

        release = st.tuples(small, small, small).map(lambda v: ".".join(map(str, v)))
        stats = st.builds(
            ServerStats, *([wide] * 5), st.floats(0, 1), *([wide] * 8), release, wide, wide,
            st.lists(wide, max_size=40).map(tuple),
        )  # fmt: skip
        return st.one_of(
            st.builds(LeaseRequest, small, small, st.just(kind)).flatmap(
                lambda r: st.tuples(
                    st.just(r),
                    st.builds(Granted, st.just(lease_id), st.just(r.size), st.just(r.ttl_ms))
                    | refusal(Op.LEASE, None),
                )
            ),
            answer(
                GetRequest(lease_id),
                st.builds(
                    Data, st.just(Op.GET), st.just(lease_id), st.binary(min_size=1, max_size=300)
                ),
            ),
            payload.flatmap(
                lambda d: answer(SetRequest(lease_id, d), st.just(Done(Op.SET, lease_id)))
            ),
            st.tuples(wide, small).flatmap(
                lambda ol: answer(
                    ReadRequest(lease_id, *ol),
                    st.builds(Data, st.just(Op.READ), st.just(lease_id), payload),
                )
            ),
            st.tuples(wide, payload).flatmap(
                lambda od: answer(WriteRequest(lease_id, *od), st.just(Done(Op.WRITE, lease_id)))
            ),
            small.flatmap(
                lambda t: answer(RenewRequest(lease_id, t), st.just(Done(Op.RENEW, lease_id)))
            ),
            answer(ReleaseRequest(lease_id), st.just(Done(Op.RELEASE, lease_id))),
            answer(
                StatRequest(lease_id),
                st.builds(LeaseInfo, st.just(lease_id), wide, wide),
            ),
            st.tuples(st.just(StatsRequest()), stats),
            st.tuples(
                st.just(ArenaMapRequest()),
                st.builds(ArenaMapReply, wide, small, wide, st.binary(max_size=MAP_CELLS)),
            ),
        )

    return ids.flatmap(pair)


def expected(name: str, reply: Reply) -> Reply:
    """What the client decodes for ``reply``: the native format's own forms lose detail."""
    if name != "native":
        return reply
    if isinstance(reply, Granted):
        return Granted(reply.lease_id, 0, 0)
    if isinstance(reply, ErrorReply) and reply.op is Op.LEASE:
        return ErrorReply(ErrorCode.NO_ROOM, "", Op.LEASE)
    if isinstance(reply, ErrorReply) and reply.op is Op.GET:
        return ErrorReply(ErrorCode.NOT_FOUND, "", Op.GET, reply.lease_id)
    if isinstance(reply, ErrorReply) and reply.op is Op.SET:
        code = (
            ErrorCode.OUT_OF_RANGE if reply.code is ErrorCode.OUT_OF_RANGE else ErrorCode.NOT_FOUND
        )
        return ErrorReply(code, "", Op.SET, reply.lease_id)
    return reply


def same(name: str, got: Reply | None, want: Reply) -> bool:
    if isinstance(want, ErrorReply) and isinstance(got, ErrorReply) and not want.message:
        return ErrorReply(got.code, "", got.op, got.lease_id) == want
    return got == want


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def drain(
    next_message: Callable[[], Any], feed: Callable[[bytes], None], chunks: list[bytes]
) -> list[Any]:
    out = []
    for chunk in chunks:
        feed(chunk)
        while (message := next_message()) is not None:
            out.append(message)
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
@FEW
@given(data=st.data())
def test_every_message_round_trips_in_any_chunking(name: str, data: st.DataObject) -> None:
    spec: ProtocolSpec = SPECS[name]
    exchanges = data.draw(st.lists(exchange(name), min_size=1, max_size=6))
    client, server = spec.client_codec(MAX), spec.server_codec(MAX)
    request_frames = [client.encode_request(request) for request, _ in exchanges]
    wire = b"".join(request_frames)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    requests = drain(server.next_request, server.feed, split(wire, cuts))
    assert requests == [request for request, _ in exchanges]

    reply_frames = [server.encode_reply(reply) for _, reply in exchanges]
    wire = b"".join(reply_frames)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    replies = drain(client.next_reply, client.feed, split(wire, cuts))
    assert len(replies) == len(exchanges)
    for got, (_, reply) in zip(replies, exchanges, strict=True):
        assert same(name, got, expected(name, reply)), (got, reply)

    request_frame, reply_frame = FRAMES[name]
    for frame in request_frames:
        assert request_frame.build(request_frame.parse(frame)) == frame
    for frame in reply_frames:
        assert reply_frame.build(reply_frame.parse(frame)) == frame


def all_decoders(max_message: int) -> list[tuple[str, Any]]:
    decoders: list[tuple[str, Any]] = []
    for name, spec in sorted(SPECS.items()):
        server = spec.server_codec(max_message)
        decoders.append((f"{name} server", (server.feed, server.next_request)))
        client = spec.client_codec(max_message)
        decoders.append((f"{name} client", (client.feed, client.next_reply)))
    return decoders


@FEW
@given(
    chunks=st.lists(st.binary(max_size=64), max_size=12),
    prefix=st.sampled_from([b"", b"\x01\x03\x00\x00", b"\x03\x00\x00\x00", b"\x01\x02"]),
)
def test_arbitrary_bytes_give_only_messages_need_more_or_protocol_error(
    chunks: list[bytes], prefix: bytes
) -> None:
    for _, (feed, next_message) in all_decoders(256):
        try:
            drain(next_message, feed, [prefix, *chunks])
        except ProtocolError as exc:
            assert str(exc)


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.binary(min_size=12, max_size=64), min_size=1, max_size=8))
def test_decoding_allocates_nothing_a_length_field_merely_claims(chunks: list[bytes]) -> None:
    fed = sum(len(c) for c in chunks)
    tracemalloc.start()
    try:
        for _, (feed, next_message) in all_decoders(1024):
            with contextlib.suppress(ProtocolError):
                drain(next_message, feed, chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 6 * fed


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_header_claiming_gigabytes_fails_at_once_without_allocating(name: str) -> None:
    header = {
        "native": b"\x03\x00\x00\x00" + (2**40).to_bytes(8, "little"),
        "network": bytes.fromhex("01030000fffffff0"),
        "uuid": bytes.fromhex("01030000fffffff0"),
    }[name]
    codec = SPECS[name].server_codec(1 << 20)
    tracemalloc.start()
    try:
        codec.feed(header)
        with pytest.raises(ProtocolError, match="maximum message size"):
            codec.next_request()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_large_payload_in_small_chunks_is_decoded_once_whole() -> None:
    client, server = NETWORK.client_codec(1 << 21), NETWORK.server_codec(1 << 21)
    frame = client.encode_request(SetRequest(3, bytes(range(256)) * 4096))
    for at in range(0, len(frame), 1500):
        assert server.next_request() is None
        server.feed(frame[at : at + 1500])
    assert server.next_request() == SetRequest(3, bytes(range(256)) * 4096)


def test_a_uuid_reply_to_an_int_protocol_codec_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not an int"):
        NETWORK.server_codec(MAX).encode_reply(Granted(uuid.uuid4(), 1, 1))


_MORE = 16
"""Bytes of the stats figures after the request counts (expiry lag, expiry behind)."""


def _stats_frame(name: str, counts: bytes, claim: int, after: bytes) -> bytes:
    """A stats reply of ``name`` whose counts are ``counts``, their length field saying
    ``claim``, and ``after`` in place of the figures after them; the frame's own length
    fits what it carries."""
    good = SPECS[name].server_codec(MAX).encode_reply(ServerStats(*range(5), 0.5, *range(7)))
    width, order = (8, "little") if name == "native" else (4, "big")
    fixed = bytearray(good[: len(good) - _MORE])  # no counts: the length field ends it
    fixed[-width:] = claim.to_bytes(width, order)
    frame = fixed + counts + after
    header = 12 if name == "native" else 8
    frame[header - width : header] = (len(frame) - header).to_bytes(width, order)
    return bytes(frame)


def _decoded_stats(name: str, frame: bytes) -> Reply | None:
    client = SPECS[name].client_codec(MAX)
    client.encode_request(StatsRequest())
    client.feed(frame)
    return client.next_reply()


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize(
    ("counts", "claim", "after", "why"),
    [(b"\0" * 12, 12, bytes(_MORE), "whole number"),
     (b"\0" * 16, 40, bytes(_MORE), "claims 40 bytes"),
     (b"\0" * 8 * 1025, 8 * 1025, bytes(_MORE), "more than 1024"),
     (b"\0" * 16, 16, bytes(8), "8 bytes after its request counts")],
    ids=["not-8-byte-counts", "past-the-frame", "too-many-counts", "figures-cut-short"],
)  # fmt: skip
def test_a_stats_reply_with_bad_request_counts_is_a_protocol_error(
    name: str, counts: bytes, claim: int, after: bytes, why: str
) -> None:
    with pytest.raises(ProtocolError, match=why):
        _decoded_stats(name, _stats_frame(name, counts, claim, after))


def test_a_negative_length_of_request_counts_is_a_protocol_error() -> None:
    # The native form's length field is signed: a length below 0 was a struct.error.
    with pytest.raises(ProtocolError, match="negative"):
        unpack_counts("=", bytearray(16), 0, -8)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_stats_from_a_server_before_the_expiry_figures_read_as_zero(name: str) -> None:
    stats = _decoded_stats(name, _stats_frame(name, bytes(16), 16, b""))
    assert isinstance(stats, ServerStats)
    assert (stats.requests, stats.expiry_lag_us, stats.expiry_behind_us) == ((0, 0), 0, 0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_stats_figures_a_newer_server_adds_after_the_known_ones_are_passed_over(
    name: str,
) -> None:
    order = "little" if name == "native" else "big"
    known = (7).to_bytes(8, order) + (9).to_bytes(8, order)
    stats = _decoded_stats(name, _stats_frame(name, bytes(8), 8, known + b"\xff" * 24))
    assert isinstance(stats, ServerStats)
    assert (stats.requests, stats.expiry_lag_us, stats.expiry_behind_us) == ((0,), 7, 9)


def test_a_stats_version_that_is_not_major_minor_patch_cannot_be_encoded() -> None:
    stats = ServerStats(*range(5), 0.5, *range(7), version="tip")
    with pytest.raises(ProtocolError, match=r"not major\.minor\.patch"):
        NETWORK.server_codec(MAX).encode_reply(stats)


@pytest.mark.parametrize("name", sorted(SPECS))
@FEW
@given(data=st.data(), most=st.integers(1, 5))
def test_next_requests_gives_what_next_request_gives_at_most_most_a_call_fewer_at_the_end(
    name: str, data: st.DataObject, most: int
) -> None:
    spec: ProtocolSpec = SPECS[name]
    requests = [r for r, _ in data.draw(st.lists(exchange(name), min_size=1, max_size=12))]
    client, server = spec.client_codec(MAX), spec.server_codec(MAX)
    wire = b"".join(client.encode_request(request) for request in requests)
    got: list[Request] = []
    for chunk in split(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=8))):
        server.feed(chunk)
        while True:
            batch: list[Request] = []
            server.next_requests(batch, most)
            assert len(batch) <= most
            got.extend(batch)
            if len(batch) < most:  # then nothing more is whole: the server asks no more
                server.next_requests(batch, most)
                assert batch == got[len(got) - len(batch) :]
                break
    assert got == requests and server.buffered() == 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_next_requests_gives_the_requests_before_a_malformed_one_then_raises_again(
    name: str,
) -> None:
    spec: ProtocolSpec = SPECS[name]
    lease_id = uuid.UUID(int=7) if name == "uuid" else 7
    requests: list[Request] = [SetRequest(lease_id, b"abc"), GetRequest(lease_id)]
    client, server = spec.client_codec(MAX), spec.server_codec(MAX)
    server.feed(b"".join(client.encode_request(r) for r in requests) + b"\x7f" * 16)
    got: list[Request] = []
    with pytest.raises(ProtocolError) as first:
        server.next_requests(got, 64)
    assert got == requests
    with pytest.raises(ProtocolError) as again:
        server.next_requests(got, 64)
    assert got == requests and str(first.value) in str(again.value)


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("thing", [GetRequest(5), None], ids=["a-request", "none"])
def test_encoding_what_is_not_a_reply_is_a_protocol_error(name: str, thing: object) -> None:
    with pytest.raises(ProtocolError, match=r"no .*form for a"):
        SPECS[name].server_codec(MAX).encode_reply(thing)  # type: ignore[arg-type]
