"""One connection's rules, sans-IO: what to send, when the connection's time is up, and why
it ends. No sockets, no trio, no clock: the task that drives it (connection_task) feeds it
events (bytes received, the time, shutdown begun, a message to push) and does what it says.

Every request takes one route: bytes -> codec -> request -> ``Service.handle`` -> reply -> codec ->
bytes. The replies of a batch go out together, at most about :data:`SEND_AT` bytes at a time.

Time limits:

- idle: a connection that holds no part of a message must send one within the idle timeout,
  unless it watches leases or holds bound ones;
- request: a message must be whole within the request timeout from its first byte (when a
  receive ends one message and starts the next, the next one's clock starts then);
- send: of replies the socket did not take at once, the client must take some within the
  request timeout, and again within it after each write (progress, as nginx's send_timeout);
- shutdown: a connection waiting for a request gets :data:`SHUTDOWN_DRAIN` more (a request
  already on its way is served), one sending replies or receiving a message gets the grace.

``due`` is when the current limit ends; :meth:`Connection.time_is` closes the connection
once the time reaches it, naming which limit ended it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, cast

from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import (
    Data,
    ErrorReply,
    IdList,
    Op,
    ReleaseManyRequest,
    RenewManyRequest,
    Reply,
    Request,
)
from memlease.core.service import Service
from memlease.core.sessions import Session
from memlease.protocol import Bytes, ServerCodec
from memlease.server.budget import RECEIVE_ROOM, Holding, MemoryBudget
from memlease.server.logs import PEER, REPEATS
from memlease.server.request_figures import RequestFigures

log = logging.getLogger("memlease")

SEND_AT: Final = 1 << 20
"""Reply bytes a batch holds before sending them and decoding more: a pipeline of gets for a
large lease would otherwise make one batch's replies as large as the lease times the number
of gets that fit in one receive."""

SHARE_AT: Final = 64 * 1024
"""Smallest get reply sent from the lease's own memory rather than copied: such a reply goes
out before the next request is handled, which below this size costs more than the copy."""

ANSWER_ROOM: Final = SEND_AT + SHARE_AT
"""The most a batch of small replies holds (SEND_AT, plus one reply below SHARE_AT): what
the memory budget must have room for, beside the largest message, for any batch to go."""

_HEAD_ROOM: Final = 256
"""More than any protocol's header of a data reply."""

DECODE_MOST: Final = 64
"""Requests decoded at once, before any is handled: enough that a call per batch costs
little per request, few enough that what they hold beside the received bytes stays small."""

SHUTDOWN_DRAIN: Final = 0.1
"""Seconds a connection waiting for a request still has once shutdown begins, so that a
request already sent (or readable in the same instant as the signal) is served, not dropped."""


_MISSES_NAMED: Final = (Op.RENEW_MANY, Op.RELEASE_MANY)
"""Batches whose reply names the ids they did not find."""


class Ending(enum.Enum):
    """Why a connection ended."""

    CLIENT = "closed by the client"
    IDLE = "idle timeout"
    REQUEST = "request timeout"
    SEND = "send timeout"
    BAD_INPUT = "bad input"
    GUESSING = "too many unknown ids"
    SHUTDOWN = "server shutting down"


class State(enum.Enum):
    """What the connection is doing, as far as its time limits care."""

    RECEIVING = "receiving"
    """Waiting for bytes (or a TLS handshake)."""
    SERVING = "serving"
    """Handling what came in, and handing replies to the socket."""
    SENDING = "sending"
    """Waiting for the client to take replies the socket did not take at once."""
    CLOSED = "closed"


MAX_MISSES: Final = 1000
"""Requests for unknown ids (expired, released, never granted) a connection may make in one
second by default; past it, it is closed. Int ids are 31 bits: one connection guessing at
full speed found other tenants' leases among 100,000 live ones within seconds."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-connection limits of the server's configuration."""

    max_message: int
    request_timeout: float
    idle_timeout: float
    handshake_timeout: float = 5.0
    """The time a TLS handshake may take (limits.tls_handshake_timeout)."""
    max_misses_per_second: int = MAX_MISSES
    """0: no limit."""


class Connection:
    """The rules of one connection, fed events by the task that does its I/O.

    The driving loop: :meth:`receive_buffer` (None: read into a buffer of your own), then
    :meth:`received` with the bytes or :meth:`received_into` with a count; then
    :meth:`next_output` until it gives nothing, sending each (:meth:`send_blocked` and
    :meth:`send_done` around a send that must wait); then :meth:`batch_done`. Whenever the
    time reaches :attr:`due`, :meth:`time_is`. :attr:`ending` is set once the connection is
    over; close it then.
    """

    __slots__ = (
        "_batches_refused_until",
        "_client_missed",
        "_codec",
        "_copies",
        "_decode_error",
        "_decoded",
        "_end_session",
        "_ending_after_send",
        "_fed",
        "_figures",
        "_grace_until",
        "_holding",
        "_kinds",
        "_limits",
        "_log_refusals",
        "_misses",
        "_misses_since",
        "_notices_sent",
        "_partial_since",
        "_pushed",
        "_refused",
        "_requests",
        "_served",
        "_service",
        "_session",
        "_unserved",
        "detail",
        "due",
        "ending",
        "has_output",
        "peer",
        "protocol",
        "send_buffers",
        "state",
        "timed",
    )

    def __init__(
        self,
        codec: ServerCodec,
        service: Service,
        limits: Limits,
        now: float,
        *,
        peer: str,
        protocol: str,
        client_missed: Callable[[float, int], bool] | None = None,
        budget: MemoryBudget | None = None,
        session: Session | None = None,
        end_session: Callable[[Session], object] | None = None,
        notices_sent: Callable[[int], object] | None = None,
        figures: RequestFigures | None = None,
    ) -> None:
        self._codec = codec
        # The connection's part in the lease table (bound and watched leases), ended with it.
        self._session = session
        self._end_session = end_session
        # Tells the lease table how many notices left this connection's queue: until then
        # each counts against limits.max_watches, which so bounds the notices held.
        self._notices_sent = notices_sent
        # What this connection holds of the server's connection memory (None: no budget).
        self._holding = None if budget is None else Holding(budget)
        if self._holding is not None:
            codec.limit_memory(self._holding.take_input)
        # The client's own count of misses, over all its connections (None: this one only).
        self._client_missed = client_missed
        self._copies = codec.copies_fed_bytes
        # Called directly, not through a bound method: compiled, a direct call of the
        # service costs a fraction of a generic one, once per request.
        self._service = service
        self._limits = limits
        self.peer = peer
        self.protocol = protocol
        self.send_buffers = 0
        """What the stream holds of a blocked send beside the bytes left (set by the driver:
        a TLS stream keeps an encrypted piece), counted with them against the budget."""
        self.state = State.RECEIVING
        self.due = now + limits.idle_timeout
        self.ending: Ending | None = None
        self.detail = ""
        """What the ending was about (a protocol error's message), for the log."""
        self.has_output = False
        """Whether :meth:`next_output` has something to give without more bytes: bytes came
        in that it has not yet looked at, or a pushed message waits."""
        # Bytes came in that next_output has not yet looked at.
        self._unserved = False
        # When the first byte of a message not yet whole came; None between messages.
        self._partial_since: float | None = None
        self._decoded = False
        # Requests decoded and not yet answered: those of _requests from _served on, then
        # the error that stopped decoding, if one did.
        # Objects, not Requests: a codec may give one this server does not know, which the
        # service refuses (UNSUPPORTED); typed Request, the compiled build would fail on it.
        self._requests: list[object] = []
        self._served = 0
        self._decode_error: str | None = None
        self._fed = False
        self._grace_until: float | None = None
        self._pushed: deque[Reply] = deque()
        self._ending_after_send: Ending | None = None
        self._log_refusals = log.isEnabledFor(logging.INFO)
        # Unknown ids asked for since _misses_since (a window of one second).
        self._misses = 0
        self._misses_since = now
        # Until then, batches that name ids are refused: they passed the miss limit.
        self._batches_refused_until = -math.inf
        # With metrics: the protocol's figures, and what this batch answered since the last
        # send (each request's type; the refusals), counted once that send is handed over.
        self._figures = figures
        self.timed = figures is not None
        """Whether the driver must call :meth:`replies_handed` after each send."""
        self._kinds: list[type] | None = None if figures is None else []
        self._refused: list[tuple[type, ErrorCode]] = []

    # ------------------------------------------------------------------ events

    def handshake_begun(self, now: float) -> None:
        """A TLS handshake starts: it must end within the handshake timeout."""
        self.due = now + self._limits.handshake_timeout

    def handshake_done(self, now: float) -> None:
        """The TLS handshake ended well: the connection is idle now."""
        self.due = now + self._limits.idle_timeout

    def may_receive(self) -> bool:
        """Whether the connection may read now: it holds, or could take, room in the memory
        budget for what it has and one more receive. False: wait until memory is given back
        (back pressure on this client alone)."""
        holding = self._holding
        if holding is None:
            return True
        return holding.input_needed(self._codec.memory() + RECEIVE_ROOM)

    @contextlib.contextmanager
    def waiting_for_memory(self) -> Iterator[None]:
        """Around a wait for memory of the budget to be given back: counted, so that a give
        wakes the waiters (and only when there are any)."""
        budget = self._holding.budget  # type: ignore[union-attr]
        budget.waiting += 1
        try:
            yield
        finally:
            budget.waiting -= 1

    def may_answer(self) -> bool:
        """Whether the connection may build a batch of replies now: the memory budget has
        room for the most a batch holds (and the stream's own share of a blocked send), so
        that no batch is ever built, uncounted, only to wait for room. False: wait until
        memory is given back. Nothing is taken: the send takes what it leaves unsent."""
        holding = self._holding
        return holding is None or holding.budget.fits(ANSWER_ROOM + self.send_buffers)

    def send_held(self, unsent: int) -> None:
        """A send left ``unsent`` bytes for later: they count against the memory budget, with
        :attr:`send_buffers`, until :meth:`send_done`. There is room for them: :meth:`may_answer`
        found room for a batch before it was built, and a large reply is only built with
        room for it (pushed messages, small and few, may pass it by their size)."""
        if self._holding is not None:
            self._holding.take_output(unsent + self.send_buffers)

    def release(self) -> None:
        """The connection is closed: give back all it held of the memory budget, and end its
        session (its bound leases are released)."""
        if self._holding is not None:
            self._holding.give_all()
        session, self._session = self._session, None
        if session is not None and self._end_session is not None:
            self._end_session(session)
        if self._pushed and self._notices_sent is not None:
            self._notices_sent(len(self._pushed))  # never to be sent
        self._pushed.clear()

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes should be read to (a large message's own buffer), or None
        to read them into a buffer of the caller's and pass them to :meth:`received`."""
        self.state = State.RECEIVING
        return self._codec.receive_buffer()

    def received(self, data: Bytes) -> None:
        """Bytes came (empty: the client closed its end). ``data`` may be a view of a buffer
        the caller reuses: it is used (or copied) before this returns."""
        self.state = State.SERVING
        if not data:
            self._end(Ending.CLIENT)
            return
        self._codec.feed(data if self._copies or type(data) is bytes else bytes(data))  # type: ignore[arg-type]
        self._unserved = self._fed = self.has_output = True

    def received_into(self, count: int) -> None:
        """``count`` bytes were read into :meth:`receive_buffer`'s view (0: the client closed
        its end)."""
        self.state = State.SERVING
        if not count:
            self._end(Ending.CLIENT)
            return
        self._codec.received(count)
        self._unserved = self._fed = self.has_output = True

    def push(self, message: Reply) -> None:
        """Queue ``message`` (a notice) for the client: it goes out between two replies, or
        at once if the connection is waiting for a request (the driver must then be woken).
        A client that does not read them is cut off by the send bound, as for replies."""
        self._pushed.append(message)
        self.has_output = True

    def next_output(self, now: float) -> list[Bytes]:
        """The bytes to send next, in order; empty when there is nothing to send. Call it while
        :attr:`has_output`. A part may be a view of a lease's memory: send it (or copy it)
        before the next call."""
        self.state = State.SERVING
        codec = self._codec
        out: list[Bytes] = []
        pushed = self._pushed
        if pushed:
            count = len(pushed)
            while pushed:
                out.append(codec.encode_reply(pushed.popleft()))
            if self._notices_sent is not None:
                self._notices_sent(count)
        if not self._unserved:
            self.has_output = False
            return out
        next_requests = codec.next_requests
        encode_reply = codec.encode_reply
        service = self._service
        session = self._session
        refusing_batches = now < self._batches_refused_until
        kinds = self._kinds
        requests = self._requests
        served = self._served
        held = 0
        more = True  # whether the codec may hold whole requests it has not given yet
        try:
            while True:
                if served == len(requests):
                    if served:  # all served: let them go
                        requests.clear()
                        served = 0
                    if not more or self._decode_error is not None:
                        break
                    try:
                        next_requests(cast("list[Request]", requests), DECODE_MOST)
                    except ProtocolError as exc:
                        # Answered after the requests before it. Its message alone is kept:
                        # the error's traceback would hold this connection in a cycle.
                        self._decode_error = str(exc)
                    if not requests:
                        break
                    self._decoded = True
                    # Fewer than asked for: the rest is not whole yet, no need to ask again.
                    more = len(requests) == DECODE_MOST
                request = requests[served]
                served += 1
                if kinds is not None:
                    kinds.append(type(request))
                reply: Reply
                if refusing_batches and (
                    type(request) is RenewManyRequest or type(request) is ReleaseManyRequest
                ):
                    reply = self._too_many_misses(request)
                else:
                    reply = service.handle(request, now, session)
                kind = type(reply)
                if kind is Data:
                    data = reply.data  # type: ignore[union-attr]
                    if len(data) >= SHARE_AT:
                        # A large reply goes out at once, and only with room in the budget
                        # for all of out with it: a send never waits for memory with
                        # replies built, and never holds a lease's view across a wait.
                        holding = self._holding
                        if holding is None or holding.budget.fits(
                            sum(map(len, out)) + len(data) + _HEAD_ROOM + self.send_buffers
                        ):
                            self._served = served
                            if type(data) is bytes:
                                out.append(encode_reply(reply))
                            else:  # the lease itself: send it before it can change
                                out.extend(codec.encode_reply_parts(reply))
                            return out
                        reply = self._busy(reply, len(data))  # type: ignore[arg-type]
                        if kinds is not None:
                            self._refused.append((type(request), ErrorCode.SERVER_BUSY))
                elif kind is ErrorReply:
                    if kinds is not None:
                        self._refused.append((type(request), reply.code))  # type: ignore[union-attr]
                    if self._log_refusals:
                        _log_refusal(self.peer, reply)  # type: ignore[arg-type]
                    if reply.code is ErrorCode.NOT_FOUND and self._missed(now):  # type: ignore[union-attr]
                        out.append(encode_reply(reply))
                        self._served = len(requests)  # the rest is never handled
                        self._unserved = False
                        self.has_output = bool(pushed)
                        self._ending_after_send = Ending.GUESSING
                        return out
                elif kind is IdList and reply.op in _MISSES_NAMED:  # type: ignore[union-attr,operator]
                    # Each id a batch did not find is a miss, as a single request's would be:
                    # past the limit, batches are refused for the rest of the second. The
                    # connection stays: ids not found are what a cleanup after a pause
                    # expects, and its bound leases must not go with it.
                    missing = len(reply.lease_ids)  # type: ignore[union-attr]
                    if missing and self._missed(now, missing):
                        self._batches_refused_until = self._misses_since + 1.0
                        refusing_batches = True
                encoded = encode_reply(reply)
                out.append(encoded)
                held += len(encoded)
                if held > SEND_AT:
                    self._served = served
                    return out
            self._served = 0
            if self._decode_error is not None:
                raise ProtocolError(self._decode_error)  # the requests before it answered
            self._unserved = False
            # A request may have ended a lease this connection watches: its notice is queued.
            self.has_output = bool(pushed)
            return out
        except ProtocolError as exc:
            out.append(encode_reply(ErrorReply(ErrorCode.BAD_REQUEST, str(exc))))
            self._unserved = self.has_output = False
            self.detail = str(exc)
            self._ending_after_send = Ending.BAD_INPUT
            return out

    def replies_handed(self, received: float, now: float) -> None:
        """The bytes of the last :meth:`next_output` are all in the kernel's hands at
        ``now``, and the requests they answer came whole by ``received``: with metrics, those
        requests are counted, each with the time between."""
        kinds = self._kinds
        if kinds:  # None without metrics; empty when only pushed messages went
            self._figures.served(kinds, self._refused, now - received)  # type: ignore[union-attr]
            kinds.clear()
            self._refused.clear()

    def _busy(self, data: Data, size: int) -> ErrorReply:
        """A refusal of a large reply the memory budget has no room for."""
        budget = self._holding.budget  # type: ignore[union-attr]
        return ErrorReply(
            ErrorCode.SERVER_BUSY,
            f"server busy: its memory for replies not yet taken ({budget.limit} B, "
            f"limits.connection_memory) has no room for {size} B now; try again later",
            op=data.op,
            lease_id=data.lease_id,
        )

    def _too_many_misses(self, request: RenewManyRequest | ReleaseManyRequest) -> ErrorReply:
        limit = self._limits.max_misses_per_second
        return ErrorReply(
            ErrorCode.TOO_MANY,
            f"{request.op.value} refused: this connection (or its client) asked for more than "
            f"{limit} unknown ids within the last second (limits.max_unknown_ids_per_second); "
            "nothing was done, send it again in a second",
            request.op,
        )

    def _missed(self, now: float, count: int = 1) -> bool:
        """Count ``count`` requests for unknown ids; whether the connection has made too many."""
        limit = self._limits.max_misses_per_second
        if not limit:
            return False
        if now - self._misses_since >= 1.0:
            self._misses_since, self._misses = now, 0
        self._misses += count
        if self._misses > limit:
            self.detail = f"{self._misses} requests for unknown ids within 1 s (limit {limit})"
            return True
        if self._client_missed is not None and self._client_missed(now, count):
            self.detail = (
                f"its client made more than {limit} requests for unknown ids within 1 s, "
                "over all its connections"
            )
            return True
        return False

    def send_blocked(self, now: float) -> None:
        """The socket did not take all of a send: the client must take some of the rest
        within the send bound."""
        self.state = State.SENDING
        self.send_progress(now)

    def send_progress(self, now: float) -> None:
        """The client took some of a blocked send: the bound counts again from ``now``, so
        a reader that is slow but steady is never cut, and one that stalls is."""
        due = now + self._limits.request_timeout
        if self._grace_until is not None:
            due = min(due, self._grace_until)
        self.due = due

    @property
    def wait_until(self) -> float:
        """When the driving task's wait must end at the latest: :attr:`due`, except in a
        blocked send, whose own waits keep the send bound (and look for progress): then
        the shutdown grace, if shutdown has begun."""
        if self.state is State.SENDING:
            return math.inf if self._grace_until is None else self._grace_until
        return self.due

    def send_done(self, now: float) -> None:
        """The blocked send went out, all of it in the kernel's hands: what it held of the
        memory budget is given back."""
        self.state = State.SERVING
        if self._holding is not None:
            self._holding.give_output()

    def batch_done(self, now: float) -> None:
        """Everything received so far is answered and sent: what the connection waits for
        next, and until when."""
        if self._ending_after_send is not None:
            self._end(self._ending_after_send)
            return
        due = self.due
        # Only bytes from the client move its limits: pushing it a message does not.
        if self._fed:
            if self._codec.buffered() <= 0:
                self._partial_since = None
                due = now + self._limits.idle_timeout
            elif self._partial_since is None or self._decoded:
                # A message began, or one ended and the next began in the same receive.
                self._partial_since = now
                due = now + self._limits.request_timeout
        self._decoded = self._fed = False
        if self._grace_until is not None:
            if self._partial_since is None:
                self._end(Ending.SHUTDOWN)
                return
            due = min(due, self._grace_until)
        self.due = due
        self.state = State.RECEIVING

    def shut_down(self, now: float, grace_until: float) -> None:
        """The server is stopping: serve what came, then close; nothing past ``grace_until``."""
        self._grace_until = grace_until
        waiting = self.state is State.RECEIVING and self._partial_since is None
        self.due = min(self.due, now + SHUTDOWN_DRAIN if waiting else grace_until)

    def time_is(self, now: float) -> None:
        """The time is ``now``: past :attr:`due`, the connection ends, by the limit that
        ran out."""
        if now < self.due or self.ending is not None:
            return
        if self._grace_until is not None:
            if self.state is State.SENDING:
                self.detail = "taking its replies"
            elif self._partial_since is not None:
                self.detail = "sending a message"
            self._end(Ending.SHUTDOWN)
        elif self.state is State.SENDING:
            self._end(Ending.SEND)
        elif self._partial_since is not None or self.state is not State.RECEIVING:
            self._end(Ending.REQUEST)
        elif self._waits_for_notices():
            self.due = now + self._limits.idle_timeout
        else:
            self._end(Ending.IDLE)

    def _waits_for_notices(self) -> bool:
        """Whether an idle connection is kept: it watches leases (it waits for notices) or
        holds bound ones (they live with it). Their ttls, and limits.max_watches, bound
        what it holds."""
        session = self._session
        return session is not None and bool(session.watching or session.bound)

    # ------------------------------------------------------------------ the end

    def _end(self, ending: Ending) -> None:
        self.state = State.CLOSED
        self.ending = ending


def _log_refusal(peer: str, reply: ErrorReply) -> None:
    # A miss is what a client with a stale id, or a guessing one, causes many times a second.
    level = logging.DEBUG if reply.code is ErrorCode.NOT_FOUND else logging.INFO
    if log.isEnabledFor(level):
        op, code = "request" if reply.op is None else reply.op.value, reply.code.name
        # Marked as repeating: a client can be refused thousands of times a second.
        about = {REPEATS: True, PEER: peer}
        log.log(level, "%s: %s refused (%s): %s", peer, op, code, reply.message, extra=about)


def log_ending(connection: Connection, limits: Limits) -> None:
    """One log line for how ``connection`` ended, at the level its cause deserves."""
    peer, ending = connection.peer, connection.ending
    about = {PEER: peer}
    if ending is Ending.IDLE:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: idle for %gs, closing", peer, limits.idle_timeout, extra=about)
    elif ending is Ending.SEND:
        log.warning(
            "%s: client took over %gs to take its replies; cut off",
            peer,
            limits.request_timeout,
            extra=about,
        )
    elif ending is Ending.REQUEST:
        log.warning(
            "%s: a %s message took over %gs to arrive; cut off",
            peer,
            connection.protocol,
            limits.request_timeout,
            extra=about,
        )
    elif ending is Ending.SHUTDOWN and connection.detail:
        log.warning(
            "%s: still %s when the shutdown grace ended; cut off",
            peer,
            connection.detail,
            extra=about,
        )
    elif ending is Ending.GUESSING:
        log.warning("%s: closing: %s; is it guessing ids?", peer, connection.detail, extra=about)
    elif ending is Ending.BAD_INPUT:
        log.warning(
            "%s: bad %s input, closing: %s",
            peer,
            connection.protocol,
            connection.detail,
            extra=about,
        )
