"""The native codec against the original's captured bytes and its own refusal forms."""

from __future__ import annotations

import struct
import sys
import uuid
from pathlib import Path

import pytest
from memlease_native import layout
from memlease_native.client_codec import NativeClientCodec
from memlease_native.server_codec import NativeServerCodec

from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    LeaseInfo,
    LeaseRequest,
    Op,
    ReadRequest,
    ReleaseRequest,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
)

VECTORS = Path(__file__).parent / "vectors" / "native"
GRANTED_ID = 0x1DB38383
MAX = 1 << 20

pytestmark = pytest.mark.skipif(
    sys.byteorder != "little", reason="the captured vectors are little-endian host bytes"
)

# The requests the original client sent, in capture order, and the replies the service gives.
EXCHANGE: list[tuple[str, Request, object]] = [
    ("01_lease_ok", LeaseRequest(100, 60000), Granted(GRANTED_ID, 100, 60000)),
    ("02_set_ok", SetRequest(GRANTED_ID, b"hello\0"), Done(Op.SET, GRANTED_ID)),
    ("03_get_ok", GetRequest(GRANTED_ID), Data(Op.GET, GRANTED_ID, b"hello\0" + bytes(94))),
    (
        "04_get_unknown",
        GetRequest(12345),
        ErrorReply(ErrorCode.NOT_FOUND, "no lease 12345", Op.GET, 12345),
    ),
    (
        "05_set_unknown",
        SetRequest(12345, b"x\0"),
        ErrorReply(ErrorCode.NOT_FOUND, "no lease 12345", Op.SET, 12345),
    ),
    (
        "06_lease_too_big",
        LeaseRequest(999999, 10),
        ErrorReply(ErrorCode.NO_ROOM, "arena full", Op.LEASE),
    ),
]


def _vector(name: str, direction: str) -> bytes:
    return (VECTORS / f"{name}.{direction}.bin").read_bytes()


@pytest.mark.parametrize(("name", "request_", "reply"), EXCHANGE, ids=[e[0] for e in EXCHANGE])
def test_server_decodes_each_captured_request_and_encodes_its_reply(
    name: str, request_: Request, reply: object
) -> None:
    codec = NativeServerCodec(MAX)
    codec.feed(_vector(name, "req"))
    assert codec.next_request() == request_
    assert codec.next_request() is None
    assert codec.encode_reply(reply) == _vector(name, "resp")  # type: ignore[arg-type]


def test_client_sends_what_the_original_client_sent() -> None:
    codec = NativeClientCodec(MAX)
    for name, request_, _ in EXCHANGE:
        assert codec.encode_request(request_) == _vector(name, "req"), name


def test_client_reads_the_original_servers_replies_in_one_stream() -> None:
    codec = NativeClientCodec(MAX)
    for _, request_, _ in EXCHANGE:
        codec.encode_request(request_)
    codec.feed(b"".join(_vector(name, "resp") for name, _, _ in EXCHANGE))
    replies = [codec.next_reply() for _ in EXCHANGE]
    assert codec.next_reply() is None
    assert replies[0] == Granted(GRANTED_ID, 0, 0)
    assert replies[1] == Done(Op.SET, GRANTED_ID)
    assert replies[2] == Data(Op.GET, GRANTED_ID, b"hello\0" + bytes(94))
    assert [(r.code, r.op, r.lease_id) for r in replies[3:]] == [  # type: ignore[union-attr]
        (ErrorCode.NOT_FOUND, Op.GET, 12345),
        (ErrorCode.NOT_FOUND, Op.SET, 12345),
        (ErrorCode.NO_ROOM, Op.LEASE, None),
    ]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_refusal_of_an_original_request_keeps_the_original_form(code: ErrorCode) -> None:
    codec = NativeServerCodec(MAX)
    lease = codec.encode_reply(ErrorReply(code, "no", Op.LEASE))
    assert lease == struct.pack("<iqi", 2, 4, -1)
    get = codec.encode_reply(ErrorReply(code, "no", Op.GET, 77))
    assert get == struct.pack("<iqiq", 4, 12, 77, 0)
    status = -2 if code is ErrorCode.OUT_OF_RANGE else -1
    assert codec.encode_reply(ErrorReply(code, "no", Op.SET, 77)) == struct.pack(
        "<iqi", 5, 4, status
    )


def test_data_set_too_large_decodes_as_out_of_range() -> None:
    codec = NativeClientCodec(MAX)
    codec.encode_request(SetRequest(9, b"too long"))
    codec.feed(struct.pack("<iqi", 5, 4, -2))
    reply = codec.next_reply()
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.op, reply.lease_id) == (ErrorCode.OUT_OF_RANGE, Op.SET, 9)


def test_unparseable_input_gets_the_general_error_reply() -> None:
    codec = NativeServerCodec(MAX)
    frame = codec.encode_reply(ErrorReply(ErrorCode.BAD_REQUEST, "unknown message type 99"))
    kind, size, code, request_type, lease_id, n = struct.unpack_from("<iqiiiq", frame)
    assert kind == layout.NativeType.ERROR >= 6
    assert (code, request_type, lease_id) == (ErrorCode.BAD_REQUEST, 0, 0)
    assert frame[32:] == b"unknown message type 99" and n == size - 20 == 23
    client = NativeClientCodec(MAX)
    client.feed(frame)
    assert client.next_reply() == ErrorReply(ErrorCode.BAD_REQUEST, "unknown message type 99")


def test_new_operations_use_new_type_codes_only() -> None:
    codec = NativeClientCodec(MAX)
    for request_ in (
        ReadRequest(5, 0, 10),
        ReleaseRequest(5),
        StatRequest(5),
        StatsRequest(),
    ):
        assert struct.unpack_from("<i", codec.encode_request(request_))[0] >= 6
    server = NativeServerCodec(MAX)
    for reply in (
        Data(Op.READ, 5, b"abc"),
        Done(Op.RELEASE, 5),
        LeaseInfo(5, 100, 20),
        ServerStats(1, 2, 3, 4, 5, 0.5, 6, 7, 8, 9, 10, 11, 12),
        ErrorReply(ErrorCode.NOT_FOUND, "gone", Op.READ, 5),
    ):
        assert struct.unpack_from("<i", server.encode_reply(reply))[0] >= 6


@pytest.mark.parametrize(
    "lease_id", [0, -1, 2**31, uuid.UUID(int=1)], ids=["zero", "negative", "too-big", "uuid"]
)
def test_ids_the_format_cannot_carry_are_refused_before_sending(lease_id: object) -> None:
    codec = NativeClientCodec(MAX)
    with pytest.raises(ProtocolError, match="lease id"):
        codec.encode_request(GetRequest(lease_id))  # type: ignore[arg-type]
    codec.feed(struct.pack("<iqi", 2, 4, 42))
    with pytest.raises(ProtocolError, match="no request outstanding"):
        codec.next_reply()


def test_a_lease_too_big_for_int32_is_a_protocol_error() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"lease size 1099511627776 B is outside what the native format carries "
        r"\(0 to 2147483647 B\)",
    ):
        NativeClientCodec(MAX).encode_request(LeaseRequest(2**40, 10))


def test_a_set_larger_than_the_maximum_message_is_refused_before_sending() -> None:
    with pytest.raises(ProtocolError, match="maximum message size"):
        NativeClientCodec(100).encode_request(SetRequest(1, bytes(100)))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (struct.pack("<iq", 99, 0), "unknown message type 99"),
        (struct.pack("<iq", 2, 4) + bytes(4), "unknown message type 2"),
        (struct.pack("<iq", 3, -1), "negative payload size"),
        (struct.pack("<iq", 3, 2**62), "above the maximum message size"),
        (struct.pack("<iqii", 1, 7, 1, 2), "lease message has 7 payload bytes, expected 8"),
        (struct.pack("<iqi", 4, 5, 1) + b"x", "get message has 5 payload bytes, expected 4"),
        (struct.pack("<iqiq", 3, 14, 1, 5) + b"ab", "claims 5 bytes of data but its frame"),
        (struct.pack("<iqiq", 3, 14, 1, -2) + b"ab", "claims -2 bytes of data"),
        (struct.pack("<iqi", 3, 8, 1) + bytes(4), "at least 12"),
    ],
)
def test_malformed_requests_are_protocol_errors_naming_the_fault(frame: bytes, reason: str) -> None:
    codec = NativeServerCodec(MAX)
    codec.feed(frame)
    with pytest.raises(ProtocolError, match=reason):
        codec.next_request()
    with pytest.raises(ProtocolError, match="cannot continue"):
        codec.next_request()


def test_an_oversized_header_fails_before_its_payload_arrives() -> None:
    codec = NativeServerCodec(1000)
    codec.feed(struct.pack("<iq", 3, 989))
    with pytest.raises(ProtocolError, match="1001 bytes"):
        codec.next_request()


def test_a_wrong_reply_for_the_outstanding_request_is_a_protocol_error() -> None:
    codec = NativeClientCodec(MAX)
    codec.encode_request(GetRequest(3))
    codec.feed(struct.pack("<iqi", 5, 4, 0))
    with pytest.raises(ProtocolError, match="where a get reply was due"):
        codec.next_reply()
