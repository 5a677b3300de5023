"""docs/protocols.md: every hex example follows the declarations and round-trips the codecs,
and every message type of every built-in protocol has one."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import pytest
from memlease_native import NATIVE
from memlease_native import layout as native_layout
from memlease_network import FORMAT as NETWORK_FORMAT
from memlease_network import NETWORK
from memlease_uuid import FORMAT as UUID_FORMAT
from memlease_uuid import UUID

from memlease.core.messages import (
    ArenaMapRequest,
    CasRequest,
    GetRequest,
    GetsRequest,
    LeaseManyRequest,
    LeaseRequest,
    ReadRequest,
    ReleaseManyRequest,
    ReleaseRequest,
    RenewManyRequest,
    RenewRequest,
    Request,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)
from memlease.protocol import ProtocolSpec

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocols.md"
INT_ID = 0x1DB38383
UUID_ID = uuid.UUID("24f828d8-310d-43dc-b470-94c5a92df081")

SPECS: dict[str, ProtocolSpec] = {"native": NATIVE, "network": NETWORK, "uuid": UUID}
FRAMES = {
    "native": (native_layout.REQUEST_FRAME, native_layout.REPLY_FRAME),
    "network": (NETWORK_FORMAT.layouts.frame, NETWORK_FORMAT.layouts.frame),
    "uuid": (UUID_FORMAT.layouts.frame, UUID_FORMAT.layouts.frame),
}
ALL_TYPES = {
    "native": set(native_layout.REQUESTS) | set(native_layout.REPLIES),
    "network": set(NETWORK_FORMAT.layouts.payloads),
    "uuid": set(UUID_FORMAT.layouts.payloads),
}


def _examples() -> list[tuple[str, str, str, bytes]]:
    """(protocol, direction, name, bytes) for each example line of the doc."""
    found: list[tuple[str, str, str, bytes]] = []
    sections = re.split(r"^## `(\w+)`", DOC.read_text(), flags=re.M)
    for protocol, body in zip(sections[1::2], sections[2::2], strict=True):
        for block in re.findall(r"```hex\n(.*?)```", body, flags=re.S):
            for entry in re.split(r"\n(?=\S)", block.strip()):
                direction, name, *hex_bytes = entry.split()
                found.append((protocol, direction, name, bytes.fromhex("".join(hex_bytes))))
    return found


EXAMPLES = _examples()


def _request_for(name: str, lease_id: int | uuid.UUID) -> Request:
    """A request of the kind the reply example ``name`` answers."""
    if name == "lease-info":
        return StatRequest(lease_id)
    whole: dict[str, Request] = {
        "granted-many": LeaseManyRequest(2, 16, 60000),
        "renew-many-done": RenewManyRequest([lease_id], 30000),
        "release-many-done": ReleaseManyRequest([lease_id]),
    }
    if name in whole:
        return whole[name]
    prefix = name.split("-")[0]
    return {
        "granted": LeaseRequest(16, 60000),
        "lease": LeaseRequest(16, 60000),
        "set": SetRequest(lease_id, b"x"),
        "get": GetRequest(lease_id),
        "read": ReadRequest(lease_id, 0, 5),
        "write": WriteRequest(lease_id, 0, b"x"),
        "renew": RenewRequest(lease_id, 1),
        "release": ReleaseRequest(lease_id),
        "error": ReadRequest(lease_id, 0, 5),
        "stats": StatsRequest(),
        "gets": GetsRequest(lease_id),
        "cas": CasRequest(lease_id, 2, 0, b"x"),
        "watching": WatchRequest([lease_id]),
        "unwatched": UnwatchRequest([lease_id]),
        "notice": StatsRequest(),  # pushed: it answers nothing
        "arena": ArenaMapRequest(),
    }[prefix]


def test_the_doc_has_an_example_of_every_message_type_of_every_protocol() -> None:
    for protocol, frames in FRAMES.items():
        shown = {frames[0].parse(frame).type for p, _, _, frame in EXAMPLES if p == protocol}
        assert shown == ALL_TYPES[protocol], protocol


@pytest.mark.skipif(sys.byteorder != "little", reason="native examples are little-endian")
@pytest.mark.parametrize(
    ("protocol", "direction", "name", "frame"),
    EXAMPLES,
    ids=[f"{p}-{d}-{n}" for p, d, n, _ in EXAMPLES],
)
def test_each_example_follows_the_declaration_and_round_trips(
    protocol: str, direction: str, name: str, frame: bytes
) -> None:
    spec = SPECS[protocol]
    lease_id = UUID_ID if protocol == "uuid" else INT_ID
    request_frame, reply_frame = FRAMES[protocol]
    if direction == "request":
        assert request_frame.build(request_frame.parse(frame)) == frame
        server = spec.server_codec(1 << 20)
        server.feed(frame)
        request = server.next_request()
        assert request is not None and server.next_request() is None
        assert spec.client_codec(1 << 20).encode_request(request) == frame
    else:
        assert direction == "reply"
        assert reply_frame.build(reply_frame.parse(frame)) == frame
        client = spec.client_codec(1 << 20)
        client.encode_request(_request_for(name, lease_id))
        client.feed(frame)
        reply = client.next_reply()
        assert reply is not None and client.next_reply() is None
        assert spec.server_codec(1 << 20).encode_reply(reply) == frame
