"""Sans-IO codecs of the ``network`` and ``uuid`` formats, one implementation for both.

A :class:`NetworkFormat` is built once per id variant: it declares the layouts with its id
field, derives their struct forms, and makes codecs for connections. Every reply says which
operation it answers, so neither side needs to remember what it sent. Decoding is in
``network_decoding``, encoding in ``network_encoding``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from memlease.core.errors import ProtocolError
from memlease.core.messages import Data, IdKind, Reply, Request
from memlease.protocol import Bytes, ClientCodec, ServerCodec
from memlease_wire.derive import derive
from memlease_wire.framing import FrameDecoder
from memlease_wire.id_lists import IdLists
from memlease_wire.network_decoding import reply_rules, request_rules
from memlease_wire.network_encoding import encode_request, reply_encoders
from memlease_wire.network_ids import IdFormat
from memlease_wire.network_layout import HEADER, MARKED_TYPES, UUID_MARK, VERSION, declare

# Decoding reads the header's version, type and flags as one big-endian word, so that one
# dict lookup checks all three; the word's layout is the declared header's (checked here
# and by tests/test_network.py against construct).
HEADER_KEY = struct.Struct(">LL")
assert derive(HEADER).fixed.format == ">BBHL", "HEADER_KEY no longer matches HEADER"


def header_key(kind: int) -> int:
    """The header word of a frame of type ``kind``, as HEADER_KEY reads it."""
    return VERSION << 24 | kind << 16


def describe_key(key: int, protocol: str = "network", mark: int = 0) -> str:
    """What is wrong with a header word that no rule of ``protocol`` (whose id-less requests
    carry ``mark``) accepts; naming the protocol the frame seems to be of, when it does."""
    version, kind, flags = key >> 24, (key >> 16) & 0xFF, key & 0xFFFF
    speaks = f"this side speaks {protocol}"
    if 0 < version <= _NATIVE_TYPES and kind == 0 and flags == 0:
        # A native header: a little-endian int32 type (1 to 32), so bytes 1 to 3 are 0.
        return f"a native frame (type {version}), it seems; {speaks}"
    if version != VERSION:
        return (
            f"frame has version {version}, this side speaks version {VERSION} (is the peer "
            "speaking another protocol on this port?)"
        )
    if kind in MARKED_TYPES and flags == UUID_MARK and not mark:
        return f"a uuid frame (flags {flags:#06x}), it seems; {speaks}"
    if kind in MARKED_TYPES and flags == 0 and mark:
        return f"a network frame (no uuid mark, flags {mark:#06x}), it seems; {speaks}"
    if flags:
        return f"frame has flags {flags:#06x}; none are defined for this type"
    return f"unknown message type {kind}"


_NATIVE_TYPES = 32
"""The native format's highest type (memlease_native.layout.NativeType)."""


class NetworkFormat:
    """The network layout with one kind of lease id, ready to make codecs."""

    def __init__(self, protocol: str, ids: IdFormat) -> None:
        self.protocol = protocol
        self.ids = ids
        self.uuid_ids = ids.kind is IdKind.UUID
        self.mark = UUID_MARK if self.uuid_ids else 0
        self.layouts = L = declare(ids.field, self.mark)
        self.s_header = derive(HEADER).fixed
        self.s_lease = derive(L.lease).fixed
        self.s_id = derive(L.id_only).fixed
        self.s_id_and_data = derive(L.id_and_data).fixed
        self.s_read = derive(L.read).fixed
        self.s_write = derive(L.write).fixed
        self.s_renew = derive(L.renew).fixed
        self.s_granted = derive(L.granted).fixed
        self.s_lease_info = derive(L.lease_info).fixed
        self.s_server_stats = derive(L.server_stats).fixed
        self.s_server_stats_more = derive(L.server_stats_more).fixed
        self.s_error = derive(L.error).fixed
        self.s_done_version = derive(L.done_version).fixed
        self.s_gets_data = derive(L.gets_data).fixed
        self.s_cas = derive(L.cas).fixed
        self.s_cas_result = derive(L.cas_result).fixed
        self.s_lease_many = derive(L.lease_many).fixed
        self.s_notice = derive(L.notice).fixed
        self.s_arena_map = derive(L.arena_map).fixed
        # The fixed parts of the id-list layouts, up to and with the count (the ids follow).
        self.s_renew_many = struct.Struct(">LL")
        self.s_ids = struct.Struct(">L")
        self.s_granted_many = struct.Struct(">QLL")
        self.id_lists = IdLists(protocol, ids, self.s_id.size)
        # Whole-frame forms: header and fixed payload in one pack.
        self.f_lease = derive(HEADER, L.lease).fixed
        self.f_id = derive(HEADER, L.id_only).fixed
        self.f_id_and_data = derive(HEADER, L.id_and_data).fixed
        self.f_read = derive(HEADER, L.read).fixed
        self.f_write = derive(HEADER, L.write).fixed
        self.f_renew = derive(HEADER, L.renew).fixed
        self.f_granted = derive(HEADER, L.granted).fixed
        self.f_lease_info = derive(HEADER, L.lease_info).fixed
        self.f_server_stats = derive(HEADER, L.server_stats).fixed
        self.f_error = derive(HEADER, L.error).fixed
        self.f_done_version = derive(HEADER, L.done_version).fixed
        self.f_gets_data = derive(HEADER, L.gets_data).fixed
        self.f_cas = derive(HEADER, L.cas).fixed
        self.f_cas_result = derive(HEADER, L.cas_result).fixed
        self.f_lease_many = derive(HEADER, L.lease_many).fixed
        self.f_notice = derive(HEADER, L.notice).fixed
        self.f_arena_map = derive(HEADER, L.arena_map).fixed
        self.header_size = self.s_header.size
        self.request_rules = {
            header_key(k) | (self.mark if k in MARKED_TYPES else 0): r
            for k, r in request_rules(self).items()
        }
        # A function of this format, not a bound method of a codec (see FrameDecoder).
        self.describe_key: Callable[[int], str] = partial(
            describe_key, protocol=protocol, mark=self.mark
        )
        self.reply_rules = {header_key(k): r for k, r in reply_rules(self).items()}
        # The header of a Data reply (set by reply_encoders, which packs the same header).
        self.data_header: Callable[[Data], bytes]
        self.reply_encoders: dict[type, Callable[[Any], bytes]] = reply_encoders(self)

    def server_codec(self, max_message: int) -> NetworkServerCodec:
        """A server codec for one connection."""
        return NetworkServerCodec(self, max_message)

    def client_codec(self, max_message: int) -> NetworkClientCodec:
        """A client codec for one connection."""
        return NetworkClientCodec(self, max_message)

    def encode_request(self, request: Request, max_message: int) -> bytes:
        """The bytes of ``request``; ProtocolError for one the format cannot carry."""
        return encode_request(self, request, max_message)


class NetworkServerCodec(FrameDecoder[Request], ServerCodec):
    """The server's end of one network or uuid connection."""

    __slots__ = ("_data_header", "_encoders")

    def __init__(self, fmt: NetworkFormat, max_message: int) -> None:
        super().__init__(
            protocol=fmt.protocol,
            header=HEADER_KEY,
            rules=fmt.request_rules,
            max_message=max_message,
            unknown=fmt.describe_key,
        )
        self._encoders = fmt.reply_encoders
        self._data_header = fmt.data_header

    # The frame decoder's own methods, not wrappers: next_requests is the hottest call of a
    # server.
    next_request = FrameDecoder.next_message
    next_requests = FrameDecoder.next_messages

    def encode_reply(self, reply: Reply) -> bytes:
        """The bytes of ``reply``."""
        encode = self._encoders.get(type(reply))
        if encode is None:
            raise ProtocolError(f"{self._protocol}: no form for a {type(reply).__name__} reply")
        try:
            return encode(reply)
        except (struct.error, AttributeError, KeyError) as exc:
            raise ProtocolError(f"{self._protocol}: cannot encode {reply!r:.200}: {exc}") from None

    def encode_reply_parts(self, reply: Reply) -> Sequence[Bytes]:
        """``reply`` as parts: a Data reply as its header and its data (not copied)."""
        if type(reply) is not Data:
            return (self.encode_reply(reply),)
        try:
            return self._data_header(reply), reply.data
        except (struct.error, AttributeError, KeyError) as exc:
            raise ProtocolError(f"{self._protocol}: cannot encode {reply!r:.200}: {exc}") from None


class NetworkClientCodec(FrameDecoder[Reply], ClientCodec):
    """The client's end of one network or uuid connection."""

    __slots__ = ("_format", "_max_request")

    def __init__(self, fmt: NetworkFormat, max_message: int) -> None:
        super().__init__(
            protocol=fmt.protocol,
            header=HEADER_KEY,
            rules=fmt.reply_rules,
            max_message=max_message,
            unknown=fmt.describe_key,
        )
        self._format = fmt
        self._max_request = max_message

    def encode_request(self, request: Request) -> bytes:
        return encode_request(self._format, request, self._max_request)

    next_reply = FrameDecoder.next_message
