"""The batch messages (lists of ids) of every built-in protocol: the codecs' bytes are the
construct declarations', both ways, and a count that disagrees with the frame is refused."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_native import NATIVE
from memlease_native import layout as native_layout
from memlease_network import FORMAT as NETWORK_FORMAT
from memlease_network import NETWORK
from memlease_uuid import FORMAT as UUID_FORMAT
from memlease_uuid import UUID

from memlease.core.errors import ProtocolError
from memlease.core.messages import (
    GrantedMany,
    IdList,
    LeaseId,
    Op,
    ReleaseManyRequest,
    RenewManyRequest,
    Request,
    UnwatchRequest,
    WatchRequest,
)
from memlease.protocol import ProtocolSpec

INT_IDS = st.lists(st.integers(1, 2**31 - 1), max_size=40)
UUID_IDS = st.lists(st.uuids(version=4), max_size=40)

CASES: list[tuple[ProtocolSpec, Any, st.SearchStrategy[list[Any]]]] = [
    (NETWORK, NETWORK_FORMAT.layouts.frame, INT_IDS),
    (UUID, UUID_FORMAT.layouts.frame, UUID_IDS),
]
if sys.byteorder == "little":  # the native layouts are host byte order
    CASES.append((NATIVE, native_layout.REQUEST_FRAME, INT_IDS))


def _wire_ids(ids: list[LeaseId]) -> list[Any]:
    return [i.bytes if isinstance(i, uuid.UUID) else i for i in ids]


@pytest.mark.parametrize(("spec", "frame", "ids"), CASES, ids=[c[0].name for c in CASES])
def test_batch_requests_are_the_declared_bytes_and_decode_back(
    spec: ProtocolSpec, frame: Any, ids: st.SearchStrategy[list[Any]]
) -> None:
    @settings(deadline=None)  # four requests each, on a shared machine
    @given(ids, st.integers(1, 2**31 - 1))
    def check(lease_ids: list[LeaseId], ttl_ms: int) -> None:
        requests: list[Request] = [
            RenewManyRequest(lease_ids, ttl_ms),
            ReleaseManyRequest(lease_ids),
            WatchRequest(lease_ids),
            UnwatchRequest(lease_ids),
        ]
        for request in requests:
            encoded = spec.client_codec(1 << 20).encode_request(request)
            parsed = frame.parse(encoded)
            assert list(parsed.payload.lease_ids) == _wire_ids(lease_ids)
            assert frame.build(parsed) == encoded
            server = spec.server_codec(1 << 20)
            server.feed(encoded)
            assert server.next_request() == request

    check()


@pytest.mark.parametrize("spec", [NETWORK, UUID], ids=["network", "uuid"])
def test_batch_replies_round_trip(spec: ProtocolSpec) -> None:
    ids = UUID_IDS if spec is UUID else INT_IDS
    frame = (UUID_FORMAT if spec is UUID else NETWORK_FORMAT).layouts.frame

    @settings(deadline=None)
    @given(ids)
    def check(lease_ids: list[LeaseId]) -> None:
        replies = [GrantedMany(lease_ids, 64, 1000)] + [
            IdList(op, lease_ids) for op in (Op.RENEW_MANY, Op.RELEASE_MANY, Op.UNWATCH)
        ]
        for reply in replies:
            encoded = spec.server_codec(1 << 20).encode_reply(reply)
            assert list(frame.parse(encoded).payload.lease_ids) == _wire_ids(lease_ids)
            client = spec.client_codec(1 << 20)
            client.feed(encoded)
            assert client.next_reply() == reply

    check()


@pytest.mark.parametrize("spec", [NATIVE, NETWORK, UUID], ids=["native", "network", "uuid"])
def test_a_count_that_disagrees_with_the_frame_is_refused(spec: ProtocolSpec) -> None:
    lease_id: LeaseId = uuid.uuid4() if spec is UUID else 7
    encoded = bytearray(spec.client_codec(1 << 20).encode_request(ReleaseManyRequest([lease_id])))
    count_at = len(encoded) - (16 if spec is UUID else 4) - 4
    encoded[count_at : count_at + 4] = (2).to_bytes(4, "little" if spec is NATIVE else "big")
    server = spec.server_codec(1 << 20)
    server.feed(bytes(encoded))
    with pytest.raises(ProtocolError, match="claims 2 ids"):
        server.next_request()
