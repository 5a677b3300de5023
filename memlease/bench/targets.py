"""Request bytes and expected reply bytes for each target, computed once per connection.

The load loop never encodes or decodes a message: it sends precomputed bytes and compares
what comes back with the precomputed reply. For memlease the reply bytes come from the
protocol's own server codec, so any protocol plugin works without a hand-written scanner;
only a reply that differs is decoded (by the protocol's client codec) to say what went wrong.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, replace

from memlease.bench.workload import TargetSpec, Workload, value_for
from memlease.core.errors import ConnectionFailed, ErrorCode, ProtocolError
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    IdKind,
    LeaseId,
    LeaseRequest,
    Op,
    ReadRequest,
    Reply,
    Request,
    SetRequest,
    WriteRequest,
)
from memlease.protocol import (
    DEFAULT_MAX_MESSAGE,
    ClientCodec,
    ProtocolSpec,
    ServerCodec,
    load_protocols,
)

SETUP_TIMEOUT = 10.0
_ONES16 = int.from_bytes(b"\x01" * 16, "big")


@dataclass(frozen=True)
class Expected:
    """The reply one request must get. Bytes in ``variable`` may differ (a new lease id),
    unless they equal ``refused`` (the protocol's refusal in the same shape)."""

    reply: bytes
    variable: tuple[int, int] | None = None
    refused: bytes | None = None


@dataclass(frozen=True)
class OpTemplate:
    op: str
    request: bytes
    expected: Expected
    message: Request | None = None  # the memlease request, for decoding a wrong reply


class Target:
    """Prepares one connection's templates (blocking) and explains a wrong reply."""

    def __init__(self, spec: TargetSpec, workload: Workload) -> None:
        self.spec = spec
        self.workload = workload
        self.leased: list[LeaseId] = []
        """The leases :meth:`prepare` took, to be released after the run."""

    def connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.spec.host, self.spec.port), SETUP_TIMEOUT)
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot reach {self.spec.label} at {self.spec.host}:{self.spec.port}: {exc}"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def prepare(self, sock: socket.socket, tag: str) -> dict[str, OpTemplate]:
        raise NotImplementedError

    def explain(self, ops: list[OpTemplate], received: bytes, index: int) -> str:
        """A short name for what went wrong with reply ``index`` of a batch of ``ops``.

        Peers' replies start with a text line; the bytes before ``index`` matched, so the
        wrong reply starts where the expected replies before it end.
        """
        start = sum(len(t.expected.reply) for t in ops[:index])
        want = ops[index].expected.reply
        got_line = received[start:].split(b"\r\n", 1)[0]
        if got_line == want.split(b"\r\n", 1)[0]:
            return f"{ops[index].op}: data mismatch (not what was set)"
        return f"{ops[index].op}: unexpected reply {got_line[:40]!r}"


def _exchange(sock: socket.socket, request: bytes, reply_end: bytes) -> bytes:
    """Send one request and read until the reply ends with ``reply_end`` (peers' setup)."""
    sock.sendall(request)
    buf = b""
    while not buf.endswith(reply_end):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionFailed("the server closed the connection during setup")
        buf += chunk
    return buf


def _tampered(value: bytes) -> bytes:
    return bytes([value[0] ^ 0xFF]) + value[1:]


class MemleaseTarget(Target):
    def __init__(self, spec: TargetSpec, workload: Workload) -> None:
        super().__init__(spec, workload)
        registry = load_protocols(warn=False)
        self.protocol: ProtocolSpec = registry.get(spec.protocol)
        self.max_message = DEFAULT_MAX_MESSAGE

    def _call(self, sock: socket.socket, request: Request) -> Reply:
        codec = self.protocol.client_codec(self.max_message)
        sock.sendall(codec.encode_request(request))
        while True:
            reply = codec.next_reply()
            if reply is not None:
                return reply
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionFailed("the server closed the connection during setup")
            codec.feed(chunk)

    def prepare(self, sock: socket.socket, tag: str) -> dict[str, OpTemplate]:
        w = self.workload
        value = value_for(tag, w.value_size)
        kind = self.protocol.id_kind
        granted = self._call(sock, LeaseRequest(w.value_size, w.value_ttl_ms, kind))
        if not isinstance(granted, Granted):
            raise ConnectionFailed(f"setup lease of {w.value_size} bytes refused: {granted}")
        lease_id = granted.lease_id
        self.leased.append(lease_id)
        done = self._call(sock, SetRequest(lease_id, value))
        if not isinstance(done, Done):
            raise ConnectionFailed(f"setup set refused: {done}")
        expected_value = _tampered(value) if self.spec.tamper_expected else value
        offset, length = w.read_span
        part = value[offset : offset + length]
        requests: dict[str, tuple[Request, Reply]] = {
            "get": (GetRequest(lease_id), Data(Op.GET, lease_id, expected_value)),
            "set": (SetRequest(lease_id, value), Done(Op.SET, lease_id)),
            "read": (ReadRequest(lease_id, offset, length), Data(Op.READ, lease_id, part)),
            "write": (WriteRequest(lease_id, offset, part), Done(Op.WRITE, lease_id)),
        }
        encoder = self.protocol.client_codec(self.max_message)
        server = self.protocol.server_codec(self.max_message)
        templates = {
            op: OpTemplate(op, encoder.encode_request(req), self._expected(server, rep), req)
            for op, (req, rep) in requests.items()
        }
        lease_req = LeaseRequest(w.value_size, w.lease_ttl_ms, kind)
        templates["lease"] = OpTemplate(
            "lease", encoder.encode_request(lease_req), self._granted_shape(kind, w), lease_req
        )
        return templates

    @staticmethod
    def _expected(server: ServerCodec, reply: Reply) -> Expected:
        """A set's or write's reply carries the lease's new version, which every one raises:
        those bytes may differ."""
        if not isinstance(reply, Done):
            return Expected(server.encode_reply(reply))
        a = server.encode_reply(Done(reply.op, reply.lease_id, 0x0101010101010101))
        b = server.encode_reply(Done(reply.op, reply.lease_id, 0x0202020202020202))
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return Expected(a, (diff[0], diff[-1] + 1)) if diff else Expected(a)

    def _granted_shape(self, kind: IdKind, w: Workload) -> Expected:
        server = self.protocol.server_codec(self.max_message)
        # Two ids that differ in every byte, so the differing bytes are exactly the id field.
        ids: tuple[LeaseId, LeaseId] = (
            (uuid.UUID(int=0x01 * _ONES16), uuid.UUID(int=0x02 * _ONES16))
            if kind is IdKind.UUID
            else (0x01010101, 0x02020202)
        )
        a, b = (server.encode_reply(Granted(i, w.value_size, w.lease_ttl_ms)) for i in ids)
        if len(a) != len(b):
            raise ProtocolError(f"{self.spec.protocol}: a granted reply has no fixed length")
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if not diff:
            return Expected(a)
        start, end = diff[0], diff[-1] + 1
        refused = server.encode_reply(ErrorReply(ErrorCode.NO_ROOM, "no room", Op.LEASE))
        same_shape = len(refused) == len(a) and refused[:start] == a[:start]
        return Expected(a, (start, end), refused[start:end] if same_shape else None)

    def explain(self, ops: list[OpTemplate], received: bytes, index: int) -> str:
        codec: ClientCodec = self.protocol.client_codec(self.max_message)
        for template in ops:
            if template.message is not None:
                codec.encode_request(template.message)
        codec.feed(received)
        reply: Reply | None = None
        try:
            for _ in range(index + 1):
                reply = codec.next_reply()
                if reply is None:
                    break
        except ProtocolError as exc:
            return f"{ops[index].op}: unparseable reply ({exc})"
        op = ops[index].op
        if reply is None:
            return f"{op}: unexpected reply bytes"
        if isinstance(reply, ErrorReply):
            return f"{op}: error reply {reply.code.name}"
        if isinstance(reply, Data):
            return f"{op}: data mismatch (not what was set)"
        return f"{op}: unexpected {type(reply).__name__}"


class MemcachedTarget(Target):
    """memcached's meta protocol. It has no partial read or write: read is a whole get and
    write a whole set; lease is a set of a second key with a ttl (whole seconds)."""

    def prepare(self, sock: socket.socket, tag: str) -> dict[str, OpTemplate]:
        w = self.workload
        value = value_for(tag, w.value_size)
        key = f"mlb:{tag}".encode()
        n = str(w.value_size).encode()
        set_req = b"ms " + key + b" " + n + b" T0\r\n" + value + b"\r\n"
        _exchange(sock, set_req, b"\r\n")
        expected_value = _tampered(value) if self.spec.tamper_expected else value
        get = OpTemplate(
            "get",
            b"mg " + key + b" v\r\n",
            Expected(b"VA " + n + b"\r\n" + expected_value + b"\r\n"),
        )
        stored = Expected(b"HD\r\n")
        ttl = str(max(1, w.lease_ttl_ms // 1000)).encode()
        lease_req = b"ms " + key + b":l " + n + b" T" + ttl + b"\r\n" + value + b"\r\n"
        return {
            "get": get,
            "read": replace(get, op="read"),
            "set": OpTemplate("set", set_req, stored),
            "write": OpTemplate("write", set_req, stored),
            "lease": OpTemplate("lease", lease_req, stored),
        }


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisTarget(Target):
    """RESP: SET/GET, GETRANGE/SETRANGE for read/write, SET with PX for lease."""

    def prepare(self, sock: socket.socket, tag: str) -> dict[str, OpTemplate]:
        w = self.workload
        value = value_for(tag, w.value_size)
        key = f"mlb:{tag}".encode()
        set_req = _resp(b"SET", key, value)
        _exchange(sock, set_req, b"\r\n")
        expected_value = _tampered(value) if self.spec.tamper_expected else value
        offset, length = w.read_span
        part = value[offset : offset + length]
        end = str(offset + length - 1).encode()
        ok = Expected(b"+OK\r\n")
        ttl = str(w.lease_ttl_ms).encode()
        return {
            "get": OpTemplate(
                "get", _resp(b"GET", key), Expected(b"$%d\r\n%s\r\n" % (len(value), expected_value))
            ),
            "set": OpTemplate("set", set_req, ok),
            "read": OpTemplate(
                "read",
                _resp(b"GETRANGE", key, str(offset).encode(), end),
                Expected(b"$%d\r\n%s\r\n" % (len(part), part)),
            ),
            "write": OpTemplate(
                "write",
                _resp(b"SETRANGE", key, str(offset).encode(), part),
                Expected(b":%d\r\n" % len(value)),
            ),
            "lease": OpTemplate("lease", _resp(b"SET", key + b":l", value, b"PX", ttl), ok),
        }


def make_target(spec: TargetSpec, workload: Workload) -> Target:
    if spec.kind == "memlease":
        return MemleaseTarget(spec, workload)
    if spec.kind == "memcached":
        return MemcachedTarget(spec, workload)
    if spec.kind == "redis":
        return RedisTarget(spec, workload)
    raise ValueError(f"unknown target kind {spec.kind!r}")
