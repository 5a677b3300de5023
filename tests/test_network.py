"""The network and uuid codecs: their documented bytes, and what they refuse."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_network import NETWORK
from memlease_uuid import UUID
from memlease_wire.network_codec import HEADER_KEY, describe_key, header_key
from memlease_wire.network_layout import HEADER

from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    IdKind,
    LeaseRequest,
    Op,
    SetRequest,
)

MAX = 1 << 20
LEASE_UUID = uuid.UUID("24f828d8-310d-43dc-b470-94c5a92df081")


def test_network_requests_are_big_endian_with_the_documented_header() -> None:
    codec = NETWORK.client_codec(MAX)
    assert codec.encode_request(LeaseRequest(100, 5000)).hex() == (
        "010100000000000c" + "0000000000000064" + "00001388"
    )
    assert codec.encode_request(SetRequest(7, b"hi")).hex() == (
        "010300000000000a" + "00000007" + "00000002" + "6869"
    )


def test_uuid_requests_carry_the_16_id_bytes() -> None:
    frame = UUID.client_codec(MAX).encode_request(GetRequest(LEASE_UUID))
    assert frame == bytes.fromhex("0102000000000010") + LEASE_UUID.bytes


def test_uuid_server_decodes_leases_in_the_uuid_id_space() -> None:
    codec = UUID.server_codec(MAX)
    codec.feed(UUID.client_codec(MAX).encode_request(LeaseRequest(64, 1000)))
    assert codec.next_request() == LeaseRequest(64, 1000, IdKind.UUID)


def test_network_server_decodes_leases_in_the_int_id_space() -> None:
    codec = NETWORK.server_codec(MAX)
    codec.feed(NETWORK.client_codec(MAX).encode_request(LeaseRequest(64, 1000, IdKind.UUID)))
    assert codec.next_request() == LeaseRequest(64, 1000, IdKind.INT)


def test_error_replies_carry_code_operation_id_and_message() -> None:
    reply = ErrorReply(ErrorCode.OUT_OF_RANGE, "data larger than lease 7", Op.SET, 7)
    frame = NETWORK.server_codec(MAX).encode_reply(reply)
    assert frame[:8] == bytes.fromhex("01ff000000000021")
    assert struct.unpack_from(">HBIH", frame, 8) == (3, 3, 7, 24)
    client = NETWORK.client_codec(MAX)
    client.feed(frame)
    assert client.next_reply() == reply


def test_an_unknown_error_code_from_a_newer_server_is_still_an_error() -> None:
    client = NETWORK.client_codec(MAX)
    client.feed(bytes.fromhex("01ff00000000000a") + struct.pack(">HBIH", 99, 0, 0, 1) + b"?")
    reply = client.next_reply()
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.INTERNAL


def test_replies_name_their_operation_without_remembering_requests() -> None:
    server, client = NETWORK.server_codec(MAX), NETWORK.client_codec(MAX)
    replies = [Done(Op.RENEW, 5), Data(Op.READ, 5, b"x"), Granted(9, 10, 20)]
    client.feed(b"".join(server.encode_reply(r) for r in replies))
    assert [client.next_reply() for _ in replies] == replies


@pytest.mark.parametrize(
    ("spec", "lease_id", "reason"),
    [
        (NETWORK, LEASE_UUID, "not an int"),
        (NETWORK, 0, "outside 1..4294967295"),
        (NETWORK, 2**32, "outside"),
        (UUID, 5, "not a UUID"),
    ],
)
def test_ids_the_format_cannot_carry_are_refused_before_sending(
    spec: object, lease_id: object, reason: str
) -> None:
    codec = spec.client_codec(MAX)  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError, match=reason):
        codec.encode_request(GetRequest(lease_id))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (bytes.fromhex("0201000000000000"), "version 2"),
        (bytes.fromhex("0101000100000000"), "flags 0x0001"),
        (bytes.fromhex("0181000000000000"), "unknown message type 129"),
        (bytes.fromhex("0142000000000000"), "unknown message type 66"),
        (bytes.fromhex("01030000ffffffff"), "above the maximum message size"),
        (bytes.fromhex("010200000000000300000007"), "get message has 3 payload bytes"),
        (bytes.fromhex("0103000000000009") + bytes.fromhex("000000070000000268"), "claims 2"),
    ],
)
def test_malformed_requests_are_protocol_errors(frame: bytes, reason: str) -> None:
    codec = NETWORK.server_codec(MAX)
    codec.feed(frame)
    with pytest.raises(ProtocolError, match=reason):
        codec.next_request()
    with pytest.raises(ProtocolError, match="cannot continue"):
        codec.next_request()


def test_values_wider_than_their_fields_are_refused() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"lease ttl 4294967296 ms is outside what the network format carries "
        r"\(0 to 4294967295 ms\)",
    ):
        NETWORK.client_codec(MAX).encode_request(LeaseRequest(1, 2**32))


@settings(max_examples=50, deadline=None)
@given(lease_id=st.uuids(version=4) | st.builds(uuid.UUID, int=st.integers(0, 2**128 - 1)))
def test_uuid_ids_decode_to_ordinary_uuids(lease_id: uuid.UUID) -> None:
    codec = UUID.server_codec(MAX)
    codec.feed(UUID.client_codec(MAX).encode_request(GetRequest(lease_id)))
    request = codec.next_request()
    assert isinstance(request, GetRequest)
    decoded = request.lease_id
    assert decoded == lease_id and hash(decoded) == hash(lease_id)
    assert str(decoded) == str(lease_id) and decoded.version == lease_id.version
    assert {decoded: 1}[lease_id] == 1


@settings(max_examples=50, deadline=None)
@given(
    version=st.integers(0, 255),
    kind=st.integers(0, 255),
    flags=st.integers(0, 2**16 - 1),
    length=st.integers(0, 2**32 - 1),
)
def test_the_fused_header_word_reads_the_declared_header(
    version: int, kind: int, flags: int, length: int
) -> None:
    frame = HEADER.build({"version": 1, "type": kind, "flags": 0, "length": length})
    assert HEADER_KEY.unpack(frame) == (header_key(kind), length)
    raw = struct.pack(">BBHL", version, kind, flags, length)
    key, _ = HEADER_KEY.unpack(raw)
    if (version, flags) != (1, 0):
        assert key != header_key(kind)
        text = describe_key(key)
        if version != 1:
            # A native header (little-endian type 1 to 31, or the next one, then zeros) is
            # named as such.
            native = 0 < version <= 32 and (kind, flags) == (0, 0)
            assert ("a native frame" if native else "version") in text
        else:
            assert "version" not in text
