"""Large messages are received into a buffer of their own (``receive_buffer``/``received``)
and their data handed over as a view of it: same messages as feeding, in any chunking."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_native.codec import S_ID_AND_DATA
from memlease_wire.framing import LARGE_FRAME

from memlease.core.errors import ProtocolError
from memlease.core.messages import GetRequest, Request, SetRequest, WriteRequest
from memlease.protocol import DEFAULT_MAX_MESSAGE, ProtocolSpec, ServerCodec, load_protocols

REGISTRY = load_protocols(warn=False)
PROTOCOLS = ["native", "network", "uuid"]
BIG = LARGE_FRAME + 1000


def _lease_id(spec: ProtocolSpec) -> object:
    import uuid

    return uuid.UUID(int=7) if spec.name == "uuid" else 7


def _wire(spec: ProtocolSpec, requests: list[Request]) -> bytes:
    client = spec.client_codec(DEFAULT_MAX_MESSAGE)
    return b"".join(client.encode_request(r) for r in requests)


def _decode(codec: ServerCodec, pieces: list[bytes], direct: list[bool]) -> list[Request]:
    """Give ``pieces`` to the codec, each either fed or (when the codec offers a receive
    buffer and ``direct`` says so) written into that buffer as a socket read would."""
    out: list[Request] = []
    choices = iter(direct)
    for piece in pieces:
        while piece:
            target = codec.receive_buffer()
            if target is not None and next(choices, True):
                with target:
                    n = min(len(target), len(piece))
                    target[:n] = piece[:n]
                codec.received(n)
                piece = piece[n:]
            else:
                codec.feed(piece)
                piece = b""
            while (request := codec.next_request()) is not None:
                out.append(request)
    return out


def _payload(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(256)) * (n // 256) + b"x" * (n % 256)


@pytest.mark.parametrize("name", PROTOCOLS)
@settings(max_examples=40, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["small", "set", "write"]), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 4 * BIG), max_size=12),
    direct=st.lists(st.booleans(), max_size=20),
)
def test_large_messages_decode_the_same_in_any_chunking(
    name: str, kinds: list[str], cuts: list[int], direct: list[bool]
) -> None:
    spec = REGISTRY.get(name)
    lease_id = _lease_id(spec)
    requests: list[Request] = []
    for i, kind in enumerate(kinds):
        if kind == "small":
            requests.append(GetRequest(lease_id))  # type: ignore[arg-type]
        elif kind == "set":
            requests.append(SetRequest(lease_id, _payload(BIG + i, i)))  # type: ignore[arg-type]
        else:
            requests.append(WriteRequest(lease_id, 3, _payload(BIG - i, i)))  # type: ignore[arg-type]
    wire = _wire(spec, requests)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in itertools.pairwise(points)]
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    assert _decode(codec, pieces, direct) == requests
    assert codec.buffered() == 0


def test_a_large_set_is_a_view_of_its_own_buffer() -> None:
    spec = REGISTRY.get("native")
    data = _payload(BIG, 1)
    wire = _wire(spec, [SetRequest(7, data), GetRequest(7)])
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    codec.feed(wire[:65536])  # a socket's first read: 1/8 of the frame is in
    assert codec.next_request() is None
    target = codec.receive_buffer()
    assert target is not None
    frame_size = len(wire) - len(_wire(spec, [GetRequest(7)]))
    assert len(target) == frame_size - 65536
    with target:
        target[:] = wire[65536:frame_size]
    codec.received(frame_size - 65536)  # type: ignore[attr-defined]
    codec.feed(wire[frame_size:])
    request = codec.next_request()
    assert isinstance(request, SetRequest)
    assert type(request.data) is memoryview and request.data.readonly
    assert request.data == data
    assert codec.next_request() == GetRequest(7)
    assert codec.receive_buffer() is None  # type: ignore[attr-defined]


def test_a_frame_header_alone_reserves_nothing() -> None:
    # A peer that claims a huge message but sends little must not make the server hold it.
    spec = REGISTRY.get("native")
    huge = _wire(spec, [SetRequest(7, b"\0" * (DEFAULT_MAX_MESSAGE - 64))])
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    tracemalloc.start()
    try:
        codec.feed(huge[: 1 << 20])  # 1/64 of the frame
        assert codec.next_request() is None
        assert codec.receive_buffer() is None  # type: ignore[attr-defined]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_once_an_eighth_is_in_the_frame_gets_its_buffer() -> None:
    spec = REGISTRY.get("native")
    wire = _wire(spec, [SetRequest(7, _payload(8 * LARGE_FRAME, 2))])
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    codec.feed(wire[: len(wire) // 8 - 1])
    assert codec.next_request() is None
    assert codec.receive_buffer() is None  # type: ignore[attr-defined]
    codec.feed(wire[len(wire) // 8 - 1 : len(wire) // 8 + 1])
    assert codec.next_request() is None
    assert codec.receive_buffer() is not None  # type: ignore[attr-defined]


def test_a_large_frame_with_inconsistent_lengths_is_refused() -> None:
    spec = REGISTRY.get("native")
    wire = bytearray(_wire(spec, [SetRequest(7, _payload(BIG, 4))]))
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    set_head = S_ID_AND_DATA  # the set's id and data length
    set_head.pack_into(wire, len(wire) - BIG - set_head.size, 7, BIG - 1)  # the set's own field
    codec.feed(bytes(wire[: len(wire) // 2]))
    assert codec.next_request() is None
    codec.feed(bytes(wire[len(wire) // 2 :]))
    with pytest.raises(ProtocolError, match="claims"):
        codec.next_request()
    with pytest.raises(ProtocolError):
        codec.next_request()
