"""The third-party ``demo`` plugin (tests/thirdparty): its codecs, and a server speaking it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_demo import DEMO

from memlease.core.errors import ErrorCode, LeaseNotFound, ProtocolError
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    LeaseRequest,
    Op,
    ReleaseRequest,
    SetRequest,
    StatRequest,
)

MAX = 8192


def test_requests_are_the_documented_lines() -> None:
    client = DEMO.client_codec(MAX)
    assert client.encode_request(LeaseRequest(100, 5000)) == b"LEASE 100 5000\n"
    assert client.encode_request(SetRequest(12, b"hello")) == b"SET 12 68656c6c6f\n"
    assert client.encode_request(GetRequest(12)) == b"GET 12\n"
    assert client.encode_request(ReleaseRequest(12)) == b"RELEASE 12\n"


def test_server_decodes_lines_in_any_chunking_and_answers_in_lines() -> None:
    server = DEMO.server_codec(MAX)
    wire = b"LEASE 100 5000\nSET 12 6869\nGET 12\nRELEASE 12\n"
    requests = []
    for byte in wire:
        server.feed(bytes([byte]))
        while (request := server.next_request()) is not None:
            requests.append(request)
    assert requests == [
        LeaseRequest(100, 5000),
        SetRequest(12, b"hi"),
        GetRequest(12),
        ReleaseRequest(12),
    ]
    assert server.encode_reply(Granted(12, 100, 5000)) == b"OK 12 100 5000\n"
    assert server.encode_reply(Data(Op.GET, 12, b"hi")) == b"DATA 12 6869\n"
    assert server.encode_reply(Done(Op.SET, 12)) == b"DONE SET 12\n"
    assert (
        server.encode_reply(ErrorReply(ErrorCode.NOT_FOUND, "no lease 9", Op.GET, 9))
        == b"ERR NOT_FOUND GET 9 no lease 9\n"
    )


@settings(max_examples=40, deadline=None)
@given(
    reply=st.one_of(
        st.builds(Granted, st.integers(1, 2**31), st.integers(1, 2**20), st.integers(1, 10**6)),
        st.builds(Data, st.just(Op.GET), st.integers(1, 2**31), st.binary(max_size=100)),
        st.builds(Done, st.sampled_from([Op.SET, Op.RELEASE]), st.integers(1, 2**31)),
        st.builds(
            ErrorReply,
            st.sampled_from(ErrorCode),
            st.from_regex(r"[a-z]+( [a-z0-9]+){0,4}", fullmatch=True),
            st.sampled_from([None, Op.LEASE, Op.GET]),
            st.one_of(st.none(), st.integers(1, 2**31)),
        ),
    )
)
def test_every_reply_round_trips(reply: object) -> None:
    client = DEMO.client_codec(MAX)
    client.feed(DEMO.server_codec(MAX).encode_reply(reply))  # type: ignore[arg-type]
    assert client.next_reply() == reply


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"FLY 1\n", "cannot parse 'FLY 1'"),
        (b"GET x\n", "lease id must be a decimal number"),
        (b"GET " + b"9" * 5000 + b"\n", "lease id must be a decimal number"),
        (b"SET 1 zz\n", "data must be hex"),
        (b"GET \xff\n", "lines are ASCII"),
        (b"G" * (MAX + 1), "no end of line within the maximum message size"),
    ],
)
def test_bad_lines_are_protocol_errors(line: bytes, reason: str) -> None:
    server = DEMO.server_codec(MAX)
    server.feed(line)
    with pytest.raises(ProtocolError, match=reason):
        server.next_request()


def test_operations_it_lacks_are_refused_before_sending() -> None:
    with pytest.raises(ProtocolError, match="no stat operation"):
        DEMO.client_codec(MAX).encode_request(StatRequest(1))


async def test_a_server_serves_a_full_exchange_over_the_demo_plugin(start_server) -> None:  # type: ignore[no-untyped-def]
    server = await start_server("demo", "native")
    async with await server.connect("demo") as client:
        granted = await client.lease(64, 5000)
        await client.set(granted.lease_id, b"third party")
        data = await client.get(granted.lease_id)
        assert data[:11] == b"third party" and len(data) == 64
        await client.release(granted.lease_id)
        with pytest.raises(LeaseNotFound):
            await client.get(granted.lease_id)


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40) | st.just(b"\n"), max_size=10))
def test_arbitrary_bytes_give_only_messages_need_more_or_protocol_error(
    chunks: list[bytes],
) -> None:
    for codec, next_message in (
        (server := DEMO.server_codec(64), server.next_request),
        (client := DEMO.client_codec(64), client.next_reply),
    ):
        try:
            for chunk in chunks:
                codec.feed(chunk)
                while next_message() is not None:
                    pass
        except ProtocolError as exc:
            assert str(exc).startswith("demo: ")
