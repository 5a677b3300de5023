"""Incremental decoding of length-prefixed frames: bytes in any chunking, whole messages out.

A decoder keeps the received bytes in one bytearray with a read offset, so taking a message
off the front costs nothing and a large payload arriving in many small chunks is appended,
never re-sliced. Every frame's length is checked against the decoder's maximum message size
as soon as its header is complete, before the payload is waited for or copied.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from memlease.errors import ErrorCode, ProtocolError

T = TypeVar("T")

PayloadDecoder = Callable[[bytearray, int, int], T]
"""Decodes one payload: (buffer, offset of the payload, payload length) -> message."""

HeaderReader = Callable[[bytearray, int], tuple[int, int]]
"""Reads one header at an offset: -> (message type, payload length)."""

# Compacting only once the consumed prefix is large and at least half the buffer keeps the
# cost of `del buf[:start]` amortised O(1) per byte.
_COMPACT_AT = 64 * 1024
_COPY_VIA_VIEW_AT = 4096


@dataclass(frozen=True, slots=True)
class PayloadRule(Generic[T]):
    """How to decode one message type: its fixed-width part, whether a variable-length tail
    follows, and the function that builds the message."""

    name: str
    fixed: int
    variable: bool
    decode: PayloadDecoder[T]


class FrameDecoder(Generic[T]):
    """Whole messages out of a byte stream of ``header | payload`` frames."""

    __slots__ = (
        "_broken",
        "_buf",
        "_header",
        "_max",
        "_protocol",
        "_read_header",
        "_rules",
        "_start",
    )

    def __init__(
        self,
        *,
        protocol: str,
        header: struct.Struct,
        read_header: HeaderReader,
        rules: Mapping[int, PayloadRule[T]],
        max_message: int,
    ) -> None:
        if max_message < header.size:
            raise ValueError(f"max_message {max_message} is below the header size {header.size}")
        self._protocol = protocol
        self._header = header.size
        self._read_header = read_header
        self._rules = rules
        self._max = max_message
        self._buf = bytearray()
        self._start = 0
        self._broken: str | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes, in any chunking."""
        start = self._start
        if start:
            buf = self._buf
            if start == len(buf):
                buf.clear()
                self._start = 0
            elif start >= _COMPACT_AT and start * 2 >= len(buf):
                del buf[:start]
                self._start = 0
        self._buf += data

    def buffered(self) -> int:
        """Bytes received and not yet taken off as messages."""
        return len(self._buf) - self._start

    def next_message(self) -> T | None:
        """The next whole message, or None until more bytes arrive. Raises ProtocolError."""
        if self._broken is not None:
            raise ProtocolError(self._broken)
        buf = self._buf
        start = self._start
        available = len(buf) - start
        if available < self._header:
            return None
        try:
            kind, length = self._read_header(buf, start)
        except ProtocolError as exc:
            raise self._fail(str(exc)) from None
        rule = self._rules.get(kind)
        if rule is None:
            known = ", ".join(str(k) for k in sorted(self._rules))
            raise self._fail(f"unknown message type {kind} (this side accepts {known})")
        if length < 0:
            raise self._fail(f"{rule.name} message claims a negative payload size ({length})")
        if self._header + length > self._max:
            raise self._fail(
                f"{rule.name} message claims {self._header + length} bytes, above the maximum "
                f"message size of {self._max} bytes"
            )
        if length < rule.fixed or (length != rule.fixed and not rule.variable):
            expected = f"at least {rule.fixed}" if rule.variable else str(rule.fixed)
            raise self._fail(f"{rule.name} message has {length} payload bytes, expected {expected}")
        if available < self._header + length:
            return None
        try:
            message = rule.decode(buf, start + self._header, length)
        except ProtocolError as exc:
            raise self._fail(str(exc)) from None
        self._start = start + self._header + length
        return message

    def _fail(self, reason: str) -> ProtocolError:
        self._broken = f"{self._protocol}: {reason}; the connection cannot continue"
        return ProtocolError(f"{self._protocol}: {reason}")


def take_tail(
    buf: bytearray, offset: int, fixed: int, claimed: int, length: int, what: str
) -> bytes:
    """The variable tail of a payload whose inner length field says ``claimed`` bytes follow
    the ``fixed`` part; a ProtocolError when the frame says otherwise."""
    if claimed != length - fixed:
        raise ProtocolError(
            f"{what} claims {claimed} bytes of data but its frame carries {length - fixed}"
        )
    begin = offset + fixed
    if claimed < _COPY_VIA_VIEW_AT:
        return bytes(buf[begin : begin + claimed])
    # A view copies once; slicing the bytearray first would copy a large payload twice.
    with memoryview(buf) as view:
        return view[begin : begin + claimed].tobytes()


def short_text(message: str, limit: int = 1000) -> bytes:
    """``message`` as UTF-8, cut to at most ``limit`` bytes on a character boundary."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return encoded
    return encoded[:limit].decode("utf-8", "ignore").encode("utf-8")


def error_code(value: int) -> ErrorCode:
    """The ErrorCode for a wire value; a code this version does not know is INTERNAL, so that
    a newer server's refusals still reach the user as errors."""
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


def check_size(protocol: str, what: str, size: int, max_message: int) -> None:
    """Refuse to encode a message the peer's decoder would refuse (or this one's would)."""
    if size > max_message:
        raise ProtocolError(
            f"{protocol}: {what} would be {size} bytes, above the maximum message size of "
            f"{max_message} bytes; send less data per request or raise max_message"
        )
