"""The request/reply loop of one connection: bytes in through the protocol's codec, each
request handled by the lease service, the replies of a batch out in one write (or one per MiB
of replies).

The hot path per receive: feed the codec, decode every whole message, handle each, join the
replies, one send.

Time limits: the idle timeout while waiting for a message, the request timeout once a
message's first byte came, and the same bound on a send so that a client that never reads
cannot hold the server up. The connection's cancel scope enforces them. While receiving, its
deadline is only ever moved earlier, never later (moving a trio deadline cost about a third
of a small request's time): when it fires before the limit, the connection goes on under a
new scope, waiting again, or answering the bytes that came in the same scheduler pass as the
early deadline (trio cancels the scope all the same). A send's deadline is exact. Shutdown
lowers the deadline: a short drain for a connection waiting for a request, the shutdown grace
for one sending replies or receiving a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, cast

import trio

from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import Data, ErrorReply, LeaseRequest, RenewRequest, Reply, Request
from memlease.protocol import HotOps, ProtocolSpec, ServerCodec
from memlease.server.connection_set import Connection, ConnectionSet
from memlease.server.socket_io import Bytes, StreamIO

log = logging.getLogger("memlease")

SEND_AT = 1 << 20
"""Reply bytes a batch holds before sending them and decoding more: a pipeline of gets for a
large lease would otherwise make one batch's replies as large as the lease times the number
of gets that fit in one receive."""

_MOVES_DEADLINES = frozenset({LeaseRequest, RenewRequest})
"""The requests that can bring the earliest lease deadline forward: only after these does
the expiry task need telling (looking costs more than the rest of a small request)."""


_Resume = Literal["fresh", "receive", "decode"]
"""Where a connection's loop starts under a new scope: afresh; waiting again for the bytes an
early deadline interrupted the wait for; answering the bytes that came as one fell due."""


class _FiredEarly(Exception):
    """The scope's early deadline fell due in the pass that brought the connection bytes."""


class LeaseService(Protocol):
    connections: int

    def handle(self, request: Request, now: float) -> Reply: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-connection limits of the server's configuration."""

    max_message: int
    request_timeout: float
    idle_timeout: float


def _buffered_reader(codec: ServerCodec) -> Callable[[], int] | None:
    reader = getattr(codec, "buffered", None)
    return reader if callable(reader) else None


def _direct_receiver(
    codec: ServerCodec,
) -> tuple[Callable[[], memoryview | None] | None, Callable[[int], None]]:
    receive_buffer = getattr(codec, "receive_buffer", None)
    received = getattr(codec, "received", None)
    if callable(receive_buffer) and callable(received):
        return receive_buffer, received
    return None, _never_called


def _never_called(count: int) -> None:
    raise AssertionError("received() without a receive buffer")


def _hot_server(
    codec: ServerCodec, service: LeaseService
) -> Callable[[float, list[Bytes], int], int] | None:
    serve_hot = getattr(codec, "serve_hot", None)
    hot_ops = getattr(service, "hot_ops", None)
    if callable(serve_hot) and callable(hot_ops):
        ops: HotOps = hot_ops()
        return partial(serve_hot, ops)
    return None


def _parts_encoder(codec: ServerCodec) -> Callable[[Data], Sequence[Bytes]] | None:
    encoder = getattr(codec, "encode_data_parts", None)
    return encoder if callable(encoder) else None


async def exchange(
    io: StreamIO,
    spec: ProtocolSpec,
    connection: Connection,
    service: LeaseService,
    limits: Limits,
    connections: ConnectionSet,
    after_batch: Callable[[], None],
) -> str:
    codec = spec.server_codec(limits.max_message)
    buffered = _buffered_reader(codec)
    receive = io.receive
    receive_into = io.receive_into
    receive_buffer, received = _direct_receiver(codec)
    send_now = io.send_now
    send_rest = io.send_rest
    # A codec that copies what it is fed can take the shared scratch buffer's view itself.
    copies = getattr(codec, "copies_fed_bytes", False) is True
    feed = cast(Callable[[Bytes], None], codec.feed)
    next_request = codec.next_request
    encode_reply = codec.encode_reply
    # A Data reply whose data is a view of a lease's block goes out as header and view, so
    # that a large get is not copied (this codec can) or copied once (it joins them).
    encode_parts = _parts_encoder(codec)
    handle = service.handle
    # Gets and sets of small values answered without message objects, when both the codec
    # and the service can (most of a pipelined cache workload).
    serve_hot = _hot_server(codec, service)
    current_time = trio.current_time
    request_timeout = limits.request_timeout
    idle_timeout = limits.idle_timeout
    log_refusals = log.isEnabledFor(logging.INFO)
    replies: list[Bytes] = []
    # When the first byte of a message not yet whole arrived; None between messages.
    partial_since: float | None = None
    # A new scope (nothing has entered the connection's yet) takes its deadline for less than
    # the deadline setter costs.
    connection.due = current_time() + idle_timeout
    scope = connection.scope = trio.CancelScope(deadline=connection.due)

    async def send(now: float, moved: bool) -> float:
        # Returns the time after the send, from which the next limit counts: ``now`` when the
        # socket took it all at once, as it usually does (no deadline to move then).
        if moved:
            after_batch()  # before the send: a slow reader must not delay an expiry
        rest = send_now(replies)
        replies.clear()
        if rest is None:
            return now
        due = now + request_timeout
        if connections.closing:
            due = min(due, connections.grace_deadline)
        scope.deadline = connection.due = due
        connection.sending = True
        await send_rest(rest)
        connection.sending = False
        return current_time()

    async def serve_batches(resume: _Resume) -> str:
        nonlocal partial_since
        # Resumed under a new scope, the connection carries on where the early deadline
        # stopped it, shutdown or not (its limit says when it ends).
        while resume != "fresh" or not connections.closing or partial_since is not None:
            if resume != "decode":
                connection.receiving = True
                # A large message is received straight into a buffer of its own.
                target = receive_buffer() if receive_buffer is not None else None
                if target is not None:
                    with target:
                        count = await receive_into(target)
                    connection.receiving = False
                    if not count:
                        return "closed by the client"
                    received(count)
                else:
                    data = await receive()
                    connection.receiving = False
                    if not data:
                        return "closed by the client"
                    feed(data if copies or type(data) is bytes else bytes(data))
            now = current_time()
            # An early deadline that fell due in the pass that brought these bytes has
            # cancelled the scope all the same: the next wait would raise. Answer them under a
            # new scope (whose deadline is the limit itself, so this never holds there).
            if scope.deadline <= now < connection.due:
                raise _FiredEarly
            resume = "fresh"
            decoded = False
            moved = False
            held = 0
            try:
                while True:
                    if serve_hot is not None:
                        appended = serve_hot(now, replies, SEND_AT - held)
                        if appended:
                            decoded = True
                            held += appended
                            if held >= SEND_AT:
                                now = await send(now, moved)
                                held = 0
                                moved = False
                                continue
                    request = next_request()
                    if request is None:
                        break
                    if type(request) in _MOVES_DEADLINES:
                        moved = True
                    reply = handle(request, now)
                    if log_refusals and type(reply) is ErrorReply:
                        _log_refusal(connection.peer, request, reply)
                    if type(reply) is Data and type(reply.data) is not bytes:
                        if encode_parts is None:
                            replies.append(encode_reply(reply))
                        else:
                            replies.extend(encode_parts(reply))
                        decoded = True
                        # The next request may change or free the block: send (or copy) first.
                        now = await send(now, moved)
                        held = 0
                        moved = False
                        continue
                    encoded = encode_reply(reply)
                    replies.append(encoded)
                    decoded = True
                    held += len(encoded)
                    if held > SEND_AT:
                        now = await send(now, moved)
                        held = 0
                        moved = False
            except ProtocolError as exc:
                log.warning("%s: bad %s input, closing: %s", connection.peer, spec.name, exc)
                replies.append(encode_reply(ErrorReply(ErrorCode.BAD_REQUEST, str(exc))))
                await send(now, moved)
                return "bad input"
            if replies:
                now = await send(now, moved)
            pending = (buffered() > 0) if buffered is not None else not decoded
            connection.partial = pending
            if not pending:
                partial_since = None
                connection.due = now + idle_timeout
            elif partial_since is None or decoded:
                partial_since = now
                connection.due = now + request_timeout
            if connections.closing:
                connection.due = min(connection.due, connections.grace_deadline)
            if connection.due < scope.deadline:
                scope.deadline = connection.due
        return "server shutting down"

    resume: _Resume = "fresh"
    while True:
        try:
            with scope:
                return await serve_batches(resume)
        except _FiredEarly:
            resume = "decode"
        else:
            # The deadline fired. Only a wait for bytes can meet an early one (a send's is
            # exact): then, before the limit, the connection goes on under a new scope.
            if not connection.receiving or current_time() >= connection.due:
                break
            resume = "receive"
        scope = connection.scope = trio.CancelScope(deadline=connection.due)
    if connections.closing:
        if connection.sending or partial_since is not None:
            doing = "taking its replies" if connection.sending else "sending a message"
            log.warning(
                "%s: still %s when the shutdown grace ended; cut off", connection.peer, doing
            )
        return "server shutting down"
    what = "send" if connection.sending else "request" if partial_since is not None else "idle"
    _log_timeout(connection.peer, spec.name, what, limits)
    return f"{what} timeout"


def _log_refusal(peer: str, request: Request, reply: ErrorReply) -> None:
    log.info("%s: %s refused (%s): %s", peer, request.op.value, reply.code.name, reply.message)


def _log_timeout(peer: str, protocol: str, what: str, limits: Limits) -> None:
    if what == "idle":
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: idle for %gs, closing", peer, limits.idle_timeout)
        return
    seconds = limits.request_timeout
    if what == "send":
        log.warning("%s: client took over %gs to take its replies; cut off", peer, seconds)
    else:
        log.warning("%s: a %s message took over %gs to arrive; cut off", peer, protocol, seconds)
