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
from typing import Any, Final, Generic, TypeVar

from mypy_extensions import mypyc_attr

from memlease.core.errors import ErrorCode, ProtocolError

T = TypeVar("T")

PayloadDecoder = Callable[[bytearray, int, int], T]
"""Decodes one payload: (buffer, offset of the payload, payload length) -> message."""


# Compacting only once the consumed prefix is large and at least half the buffer keeps the
# cost of `del buf[:start]` amortised O(1) per byte.
_COMPACT_AT: Final = 64 * 1024
_SMALL_TAIL: Final = 1024
# bytes(buf[a:b]) copies twice and costs three times what a struct "Ns" unpack does; one
# precomputed form per small length (about 140 KB in all) keeps 64-byte payloads cheap.
_TAIL_FORMS: Final = tuple(struct.Struct(f"{n}s") for n in range(_SMALL_TAIL))

LARGE_FRAME: Final = 256 * 1024
"""A frame of at least this many bytes gets a buffer of its own, which the caller can receive
into (``receive_buffer``) and whose message's data is a view of it: no copy on the way in."""
_RESERVE_AT: Final = 8
"""A large frame's buffer is made once 1/8 of the frame has arrived, not on its header
alone: a peer must send bytes for the server to hold a multiple of them."""


# Under mypyc (the optional compiled build) a native class cannot subclass bytearray.
@mypyc_attr(native_class=False)
class FrameBuffer(bytearray):
    """A large frame's own buffer. It is handed over with the frame's message and never
    reused, so the message's data may be a view of it."""


# Generic and slotted, so not a native class under mypyc: read per format, not per message.
@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class PayloadRule(Generic[T]):
    """How to decode one message type: its fixed-width part, whether a variable-length tail
    follows, and the function that builds the message."""

    name: str
    fixed: int
    variable: bool
    decode: PayloadDecoder[T]


_Compiled = dict[int, tuple[int, int, "PayloadDecoder[Any]", "PayloadRule[Any]"]]
# Per (rules, header size, max message): a server makes a decoder per connection, and
# building this table was 4 % of the server's time with a connection per request.
_compiled: dict[tuple[int, int, int], tuple[Mapping[int, PayloadRule[Any]], _Compiled]] = {}
_COMPILED_KEPT: Final = 64


def _compile(
    rules: Mapping[int, PayloadRule[Any]], header: int, max_message: int, cache: bool
) -> _Compiled:
    key = (id(rules), header, max_message)
    cached = _compiled.get(key) if cache else None
    if cached is not None and cached[0] is rules:
        return cached[1]
    most_payload = max_message - header
    # One chained comparison on the hot path checks negative, short, long and oversized
    # payloads together; the error path sorts out which it was.
    table: _Compiled = {
        int(k): (
            rule.fixed,
            most_payload if rule.variable else min(rule.fixed, most_payload),
            rule.decode,
            rule,
        )
        for k, rule in rules.items()
    }
    if not cache:
        return table
    if len(_compiled) >= _COMPILED_KEPT:
        _compiled.clear()
    # The entry keeps ``rules`` alive, so its id cannot be reused while it is cached.
    _compiled[key] = (rules, table)
    return table


# The codecs subclass it, compiled or not.
@mypyc_attr(allow_interpreted_subclasses=True)
class FrameDecoder(Generic[T]):
    """Whole messages out of a byte stream of ``header | payload`` frames.

    ``header`` unpacks to ``(key, payload length)``; ``rules`` maps each key accepted to how
    its payload decodes, and ``unknown(key)`` says what is wrong with any other key (a format
    whose header holds a version and flags beside the type folds them into the key, so that
    one dict lookup checks them all). ``early_key``, when given, unpacks the key alone from
    the header's first bytes, so that an unknown key is refused before the header is whole.

    ``cache_rules``: compile ``rules`` once per process (rules shared by every decoder of a
    format). False for rules made per decoder: the cache would keep them, and whatever they
    are bound to, alive.
    """

    __slots__ = (
        "_broken",
        "_buf",
        "_early",
        "_frame",
        "_frame_filled",
        "_header",
        "_max",
        "_may_hold",
        "_protocol",
        "_rules",
        "_start",
        "_unknown",
        "_unpack",
    )

    copies_fed_bytes = True
    """``feed`` copies its argument, so a caller may pass a view of a buffer it reuses."""

    def __init__(
        self,
        *,
        protocol: str,
        header: struct.Struct,
        rules: Mapping[int, PayloadRule[T]],
        max_message: int,
        unknown: Callable[[int], str] | None = None,
        cache_rules: bool = True,
        early_key: struct.Struct | None = None,
    ) -> None:
        if max_message < header.size:
            raise ValueError(f"max_message {max_message} is below the header size {header.size}")
        self._protocol = protocol
        self._header = header.size
        self._unpack = header.unpack_from
        self._max = max_message
        self._rules: _Compiled = _compile(rules, header.size, max_message, cache_rules)
        # The callable given, never a bound method of self: that would put every codec in a
        # reference cycle, and a dropped connection's buffer (up to max_message) would wait
        # for a full garbage collection.
        self._unknown = unknown
        # The key's own bytes at the front of the header, checked as soon as they are in: a
        # peer of another protocol whose frame is shorter than this header is refused at once,
        # not when the request timeout ends its wait for the rest.
        self._early = early_key
        self._buf = bytearray()
        self._start = 0
        self._broken: str | None = None
        # A large frame being received into its own buffer, and how much of it is in.
        self._frame: FrameBuffer | None = None
        self._frame_filled = 0
        self._may_hold: Callable[[int], bool] | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes, in any chunking."""
        frame = self._frame
        if frame is not None:
            room = len(frame) - self._frame_filled
            if room:
                taken = min(room, len(data))
                frame[self._frame_filled : self._frame_filled + taken] = data[:taken]
                self._frame_filled += taken
                data = data[taken:]
            if not data:
                return
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

    def receive_buffer(self) -> memoryview | None:
        """Where the next received bytes should go, when a large frame is being received
        into its own buffer: the rest of that frame (tell :meth:`received` how much was
        written). None when bytes should be fed as usual."""
        frame = self._frame
        if frame is None or self._frame_filled == len(frame):
            return None
        return memoryview(frame)[self._frame_filled :]

    def received(self, count: int) -> None:
        """``count`` bytes were written at the front of :meth:`receive_buffer`'s view."""
        self._frame_filled += count

    def memory(self) -> int:
        """Bytes held for messages not yet whole: the receive buffer (what is in it, taken
        off or not, until it is compacted) and a large frame's own buffer."""
        frame = self._frame
        return len(self._buf) + (0 if frame is None else len(frame))

    def limit_memory(self, may_hold: Callable[[int], bool]) -> None:
        """Ask ``may_hold(size)`` before a large frame gets a buffer of its own; without it,
        the frame's bytes gather in the receive buffer as they come."""
        self._may_hold = may_hold

    def buffered(self) -> int:
        """Bytes received and not yet taken off as messages."""
        pending = len(self._buf) - self._start
        return pending if self._frame is None else pending + self._frame_filled

    def next_message(self) -> T | None:
        """The next whole message, or None until more bytes arrive. Raises ProtocolError."""
        into: list[T] = []
        self.next_messages(into, 1)
        return into[0] if into else None

    def next_messages(self, into: list[T], most: int) -> None:
        """Append the whole messages received, up to ``most``, to ``into`` in order; fewer
        than ``most`` when no more are whole. Raises ProtocolError, the messages before the
        malformed one appended first; every later call raises it again."""
        if self._broken is not None:
            raise ProtocolError(self._broken)
        if self._frame is not None:
            message = self._large_message()
            if message is None:
                return
            into.append(message)
            most -= 1
        buf = self._buf
        start = self._start
        header = self._header
        unpack = self._unpack
        rules = self._rules
        size = len(buf)
        # Declared, so that the compiled build keeps them as machine ints (struct gives Any).
        key: int
        length: int
        # One loop for a whole receive: what is looked up once per call here was once per
        # message when each message was a call, the largest part of decoding small ones.
        while most > 0:
            payload = start + header
            if size < payload:
                early = self._early
                if early is not None and size - start >= early.size:
                    (key,) = early.unpack_from(buf, start)
                    if key not in rules:
                        raise self._fail(self._unknown_type(key))
                break
            key, length = unpack(buf, start)
            rule = rules.get(key)
            if rule is None:
                raise self._fail(self._unknown_type(key))
            fixed, longest, decode, _ = rule
            if not fixed <= length <= longest:
                raise self._fail(self._bad_length(rule[3], length))
            end = payload + length
            if size < end:
                whole = end - start
                if whole >= LARGE_FRAME and (size - start) * _RESERVE_AT >= whole:
                    may_hold = self._may_hold
                    if may_hold is None or may_hold(whole):
                        self._start = start
                        self._begin_large(whole)
                        return
                break
            try:
                into.append(decode(buf, payload, length))
            except ProtocolError as exc:
                raise self._fail(str(exc)) from None
            start = end
            most -= 1
        if start == size and start >= _COMPACT_AT:
            # All of a large buffer is taken: free it now, not at the next receive (an idle
            # connection would hold its last message's bytes until then).
            buf.clear()
            start = 0
        self._start = start

    def _begin_large(self, size: int) -> None:
        # Everything after the read offset is the start of this frame.
        buf, start = self._buf, self._start
        frame = FrameBuffer(size)
        have = len(buf) - start
        with memoryview(buf) as view:
            frame[:have] = view[start:]
        buf.clear()
        self._start = 0
        self._frame = frame
        self._frame_filled = have

    def _large_message(self) -> T | None:
        frame = self._frame
        assert frame is not None
        if self._frame_filled < len(frame):
            return None
        # The header was checked when the frame began.
        key, length = self._unpack(frame, 0)
        self._frame = None
        self._frame_filled = 0
        try:
            message: T = self._rules[key][2](frame, self._header, length)
        except ProtocolError as exc:
            raise self._fail(str(exc)) from None
        return message

    def _unknown_type(self, key: int) -> str:
        if self._unknown is not None:
            return self._unknown(key)
        known = ", ".join(str(k) for k in sorted(self._rules))
        return f"unknown message type {key} (this side accepts {known})"

    def _bad_length(self, rule: PayloadRule[T], length: int) -> str:
        if length < 0:
            return f"{rule.name} message claims a negative payload size ({length})"
        if self._header + length > self._max:
            return (
                f"{rule.name} message claims {self._header + length} bytes, above the maximum "
                f"message size of {self._max} bytes"
            )
        expected = f"at least {rule.fixed}" if rule.variable else str(rule.fixed)
        return f"{rule.name} message has {length} payload bytes, expected {expected}"

    def _fail(self, reason: str) -> ProtocolError:
        self._broken = f"{self._protocol}: {reason}; the connection cannot continue"
        return ProtocolError(f"{self._protocol}: {reason}")


def take_tail(
    buf: bytearray, offset: int, fixed: int, claimed: int, length: int, what: str
) -> bytes | memoryview:
    """The variable tail of a payload whose inner length field says ``claimed`` bytes follow
    the ``fixed`` part; a ProtocolError when the frame says otherwise. A copy, except from a
    large frame's own buffer: a read-only view of it."""
    if claimed != length - fixed:
        raise ProtocolError(
            f"{what} claims {claimed} bytes of data but its frame carries {length - fixed}"
        )
    if claimed < _SMALL_TAIL:
        tail: bytes = _TAIL_FORMS[claimed].unpack_from(buf, offset + fixed)[0]
        return tail
    begin = offset + fixed
    if type(buf) is FrameBuffer:
        return memoryview(buf)[begin : begin + claimed].toreadonly()
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
