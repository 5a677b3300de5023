"""``demo``: a line-based text protocol, shipped as a third-party memlease plugin.

It exists to prove that a package outside memlease can add a wire format through the
``memlease.protocols`` entry point alone, and to show how small a plugin can be. One ASCII
line per message, fields separated by single spaces, data in hex::

    LEASE 100 5000        ->  OK 1234 100 5000
    SET 1234 68656c6c6f   ->  DONE SET 1234
    GET 1234              ->  DATA 1234 68656c6c6f000000...
    RELEASE 1234          ->  DONE RELEASE 1234
    GET 99                ->  ERR NOT_FOUND GET 99 no lease 99 ...

An ``ERR`` line names the code, the operation and id (``-`` when unknown), then a message.
"""

from __future__ import annotations

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
    ReleaseRequest,
    Reply,
    Request,
    SetRequest,
)
from memlease.protocol import ClientCodec, ProtocolSpec, ServerCodec, hookimpl

NAME = "demo"


def _number(text: str, what: str) -> int:
    # Python refuses to parse ints of more than 4300 digits; no field needs more than 20.
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise ProtocolError(f"{NAME}: {what} must be a decimal number, not {text[:24]!r}")
    return int(text)


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ProtocolError(f"{NAME}: data must be hex digits, not {text[:20]!r}") from None


class LineReader:
    """Whole lines out of bytes fed in any chunking, none longer than ``max_message``."""

    def __init__(self, max_message: int) -> None:
        self._max = max_message
        self._buf = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered(self) -> int:
        """Bytes of a line not yet ended."""
        return len(self._buf)

    def next_line(self) -> list[str] | None:
        end = self._buf.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > self._max:
                raise ProtocolError(
                    f"{NAME}: no end of line within the maximum message size of {self._max} bytes"
                )
            return None
        if end + 1 > self._max:
            raise ProtocolError(f"{NAME}: a line of {end + 1} bytes is above {self._max}")
        raw = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scanned = 0
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"{NAME}: lines are ASCII; got {raw[:20]!r}") from None
        return line.split(" ")


def _int_id(lease_id: object) -> int:
    if type(lease_id) is not int or lease_id <= 0:
        raise ProtocolError(f"{NAME}: lease ids are positive ints, not {lease_id!r}")
    return lease_id


class DemoServerCodec(ServerCodec):
    """The server's end of a demo connection: only what a codec must give."""

    def __init__(self, max_message: int) -> None:
        self._lines = LineReader(max_message)

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def buffered(self) -> int:
        return self._lines.buffered()

    def next_request(self) -> Request | None:
        fields = self._lines.next_line()
        if fields is None:
            return None
        match fields:
            case ["LEASE", size, ttl_ms]:
                return LeaseRequest(_number(size, "size"), _number(ttl_ms, "ttl"))
            case ["GET", lease_id]:
                return GetRequest(_number(lease_id, "lease id"))
            case ["SET", lease_id, data]:
                return SetRequest(_number(lease_id, "lease id"), _hex(data))
            case ["RELEASE", lease_id]:
                return ReleaseRequest(_number(lease_id, "lease id"))
        raise ProtocolError(
            f"{NAME}: cannot parse {' '.join(fields)[:40]!r}; expected LEASE <size> <ttl_ms>, "
            "GET <id>, SET <id> <hex> or RELEASE <id>"
        )

    def encode_reply(self, reply: Reply) -> bytes:
        if isinstance(reply, Granted):
            line = f"OK {reply.lease_id} {reply.size} {reply.ttl_ms}"
        elif isinstance(reply, Data):
            line = f"DATA {reply.lease_id} {reply.data.hex()}"
        elif isinstance(reply, Done):
            line = f"DONE {reply.op.name} {reply.lease_id}"
        elif isinstance(reply, ErrorReply):
            op = "-" if reply.op is None else reply.op.name
            lease_id = "-" if reply.lease_id is None else str(reply.lease_id)
            message = " ".join(reply.message.split()) or "-"
            line = f"ERR {reply.code.name} {op} {lease_id} {message}"
        else:
            raise ProtocolError(f"{NAME}: no form for a {type(reply).__name__} reply")
        return line.encode("ascii", "replace") + b"\n"


class DemoClientCodec(ClientCodec):
    """The client's end of a demo connection."""

    def __init__(self, max_message: int) -> None:
        self._lines = LineReader(max_message)

    def encode_request(self, request: Request) -> bytes:
        if isinstance(request, LeaseRequest):
            line = f"LEASE {request.size} {request.ttl_ms}"
        elif isinstance(request, GetRequest):
            line = f"GET {_int_id(request.lease_id)}"
        elif isinstance(request, SetRequest):
            line = f"SET {_int_id(request.lease_id)} {request.data.hex()}"
        elif isinstance(request, ReleaseRequest):
            line = f"RELEASE {_int_id(request.lease_id)}"
        else:
            raise ProtocolError(f"{NAME}: the demo protocol has no {request.op.value} operation")
        return line.encode("ascii") + b"\n"

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def next_reply(self) -> Reply | None:
        fields = self._lines.next_line()
        if fields is None:
            return None
        match fields:
            case ["OK", lease_id, size, ttl_ms]:
                return Granted(
                    _number(lease_id, "lease id"), _number(size, "size"), _number(ttl_ms, "ttl")
                )
            case ["DATA", lease_id, data]:
                return Data(Op.GET, _number(lease_id, "lease id"), _hex(data))
            case ["DONE", ("SET" | "RELEASE") as op, lease_id]:
                return Done(Op[op], _number(lease_id, "lease id"))
            case ["ERR", code, op, lease_id, *message] if code in ErrorCode.__members__:
                return ErrorReply(
                    ErrorCode[code],
                    " ".join(message),
                    None if op == "-" else Op[op] if op in Op.__members__ else None,
                    None if lease_id == "-" else _number(lease_id, "lease id"),
                )
        raise ProtocolError(f"{NAME}: cannot parse reply {' '.join(fields)[:40]!r}")


DEMO = ProtocolSpec(
    name=NAME,
    id_kind=IdKind.INT,
    default_port=7499,
    description="a line-based text protocol (third-party plugin demo)",
    server_codec=DemoServerCodec,
    client_codec=DemoClientCodec,
)


@hookimpl
def memlease_protocols() -> list[ProtocolSpec]:
    """The demo protocol."""
    return [DEMO]
