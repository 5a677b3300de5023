"""The trio client: ``await memlease.connect(address, protocol=...)``.

One connection, any number of requests on it, pipelined with :meth:`AsyncClient.pipeline`.
What each method means lives in memlease.client.calls, shared with the blocking client
(memlease.client.blocking); this module only moves bytes.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import TypeVar

import trio

from memlease.client import calls, connecting
from memlease.client.calls import Call, DataLike, IdLike
from memlease.client.connecting import DEFAULT_TIMEOUT, FIRST_BYTES, RECEIVE_SIZE
from memlease.core.arena import ArenaMap
from memlease.core.errors import ConnectionFailed, ProtocolError, WrongProtocol
from memlease.core.messages import (
    Granted,
    LeaseId,
    LeaseInfo,
    Notice,
    Reply,
    Request,
    ServerStats,
)
from memlease.protocol import DEFAULT_MAX_MESSAGE, ClientCodec, ProtocolRegistry, ProtocolSpec

T = TypeVar("T")


async def connect(
    address: tuple[str, int] | str,
    protocol: str = "native",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_message: int = DEFAULT_MAX_MESSAGE,
    registry: ProtocolRegistry | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncClient:
    """Connect to a memlease server speaking ``protocol`` at ``address`` (``(host, port)`` or
    ``"host:port"``). ``timeout`` bounds the connect (with its TLS handshake) and each reply.
    With ``ssl_context`` (e.g. from memlease.tls.client_context), speak TLS and check the
    server's certificate against ``host``. Raises ConnectionFailed, or ConfigError for an
    unknown protocol or a malformed address."""
    spec = connecting.find_protocol(protocol, registry)
    host, port = connecting.parse_address(address)
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            if ssl_context is not None:
                stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
                await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await _close_quietly(stream)
        raise ConnectionFailed(
            connecting.tls_failure(f"{host}:{port}", exc.__cause__ or exc)
        ) from None
    except trio.TooSlowError:
        await _close_quietly(stream)
        raise ConnectionFailed(
            f"no connection to {host}:{port} within {timeout:g} s; is the server up?"
        ) from None
    except OSError as exc:
        raise ConnectionFailed(
            f"cannot connect to {host}:{port} ({exc.strerror or exc}); is memlease serving "
            f"{protocol} there?"
        ) from None
    return AsyncClient(
        stream,
        spec,
        f"{host}:{port}",
        timeout=timeout,
        max_message=max_message,
        registry=registry,
        tls_probe_at=None if ssl_context is not None else (host, port),
    )


async def _speaks_tls(address: tuple[str, int], timeout: float) -> bool:
    """connecting.speaks_tls, in trio: whether a TLS handshake succeeds at ``address``."""
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(min(timeout, 5.0)):
            stream = await trio.open_tcp_stream(*address)
            tls = trio.SSLStream(stream, connecting.probe_context(), server_hostname=address[0])
            stream = tls
            await tls.do_handshake()
            return True
    except (trio.BrokenResourceError, trio.TooSlowError, OSError):
        return False
    finally:
        await _close_quietly(stream)


async def _close_quietly(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 1.0
            await stream.aclose()


class AsyncClient:
    """A connection to a memlease server. Methods raise the typed errors of memlease.core.errors:
    LeaseNotFound, NoRoom, LeaseTooSmall, BadSize, BadTtl, ... for refusals; ConnectionFailed
    when the server cannot be reached or no reply comes within the timeout (the connection is
    then closed); ProtocolError for bytes that do not follow the protocol.

    A lease id is an int or a ``uuid.UUID``, or a UUID's string form; data is bytes (or a
    bytearray or memoryview), or a str, which is written as its UTF-8 bytes.

    Tasks may share a client: requests are sent, and replies read, one call at a time. A call
    cancelled before its request is sent leaves the client usable; one cancelled later leaves
    it unusable (ConnectionFailed), since its reply may still come and would answer the next.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        spec: ProtocolSpec,
        peer: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message: int = DEFAULT_MAX_MESSAGE,
        registry: ProtocolRegistry | None = None,
        tls_probe_at: tuple[str, int] | None = None,
    ) -> None:
        """``registry``: the protocols to try on replies that are not ``spec``'s;
        ``tls_probe_at``: for a plain connection, where to ask whether the port speaks TLS
        when it closes without a reply."""
        self.protocol = spec
        self._registry = registry
        self._tls_probe_at = tls_probe_at
        # The first reply bytes, until a reply decodes: if none does, they tell which
        # protocol (or TLS) the port speaks instead.
        self._first: bytearray | None = bytearray()
        self.peer = peer
        self.timeout = timeout
        self._stream = stream
        self._max_message = max_message
        self._codec: ClientCodec = spec.client_codec(max_message)
        self._lock = trio.StrictFIFOLock()
        self._broken: str | None = None
        # Notices of watched leases, as they came, until notices() takes them.
        self._notices: deque[Notice] = deque()
        # The wait for notices while no call is under way, which a call cancels to go first;
        # the waits for notices queued for the lock (the other tasks queued are calls).
        self._listening: trio.CancelScope | None = None
        self._listeners_queued = 0

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; later calls raise ConnectionFailed."""
        self._broken = self._broken or "the client was closed"
        await self._stream.aclose()

    async def lease(self, size: int, ttl_ms: int, *, bound: bool = False) -> Granted:
        """Lease ``size`` bytes for ``ttl_ms`` milliseconds. ``bound``: the server releases
        the lease when this connection closes (for any reason), if its ttl has not ended it
        first. Raises NoRoom, BadSize, BadTtl."""
        return await self._run(calls.lease(size, ttl_ms, self.protocol.id_kind, bound))

    async def lease_many(
        self, count: int, size: int, ttl_ms: int, *, bound: bool = False
    ) -> list[Granted]:
        """``count`` leases of ``size`` bytes for ``ttl_ms``, in one request, all or none.
        Raises NoRoom (no lease left behind), TooMany (over the server's limits.max_batch),
        BadSize, BadTtl."""
        kind = self.protocol.id_kind
        return await self._run(calls.lease_many(count, size, ttl_ms, kind, bound))

    async def get(self, lease_id: IdLike) -> bytes:
        """The whole leased region. Raises LeaseNotFound."""
        return await self._run(calls.get(lease_id))

    async def set(self, lease_id: IdLike, data: DataLike) -> int:
        """Write ``data`` at offset 0; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        return await self._run(calls.set_(lease_id, data))

    async def gets(self, lease_id: IdLike) -> tuple[bytes, int]:
        """The whole leased region and its version, read together. Raises LeaseNotFound."""
        return await self._run(calls.gets(lease_id))

    async def cas(self, lease_id: IdLike, version: int, data: DataLike, offset: int = 0) -> int:
        """Write ``data`` at ``offset`` only if the lease is at ``version``; the new version.
        Raises VersionMismatch (``.current``: the lease's version; nothing written),
        LeaseNotFound, LeaseTooSmall."""
        return await self._run(calls.cas(lease_id, version, data, offset))

    async def read(self, lease_id: IdLike, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``. Raises LeaseNotFound, LeaseTooSmall."""
        return await self._run(calls.read(lease_id, offset, length))

    async def write(self, lease_id: IdLike, offset: int, data: DataLike) -> int:
        """Write ``data`` at ``offset``; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        return await self._run(calls.write(lease_id, offset, data))

    async def renew(self, lease_id: IdLike, ttl_ms: int) -> None:
        """Set the lease's deadline to now + ``ttl_ms``. Raises LeaseNotFound, BadTtl."""
        await self._run(calls.renew(lease_id, ttl_ms))

    async def release(self, lease_id: IdLike) -> None:
        """Free the lease at once. Raises LeaseNotFound."""
        await self._run(calls.release(lease_id))

    async def renew_many(self, lease_ids: Sequence[IdLike], ttl_ms: int) -> list[LeaseId]:
        """Renew every live lease of ``lease_ids`` to now + ``ttl_ms``, in one request; the
        ids that were not found. Raises BadTtl (nothing renewed), TooMany."""
        return await self._run(calls.renew_many(lease_ids, ttl_ms))

    async def release_many(self, lease_ids: Sequence[IdLike]) -> list[LeaseId]:
        """Release every live lease of ``lease_ids``, in one request; the ids that were not
        found. Raises TooMany."""
        return await self._run(calls.release_many(lease_ids))

    async def watch(self, lease_ids: IdLike | Sequence[IdLike]) -> None:
        """Have the server tell this connection when each lease ends (expired, released, or
        its bound connection closed): see notices. All or none:
        raises LeaseNotFound, watching none, if one is not live; TooMany past the server's
        limits.max_watches."""
        await self._run(calls.watch(lease_ids))

    async def unwatch(self, lease_ids: IdLike | Sequence[IdLike]) -> list[LeaseId]:
        """Stop the notices of these leases; the ids this connection was not watching (not an
        error)."""
        return await self._run(calls.unwatch(lease_ids))

    async def stat(self, lease_id: IdLike) -> LeaseInfo:
        """The lease's size, remaining ttl and version. Raises LeaseNotFound."""
        return await self._run(calls.stat(lease_id))

    async def stats(self) -> ServerStats:
        """The server's figures."""
        return await self._run(calls.stats())

    async def arena_map(self) -> ArenaMap:
        """A picture of the server's arena: how full each stretch of it is, in at most
        4096 one-byte cells (memlease.core.arena.MAP_CELLS)."""
        return await self._run(calls.arena_map())

    async def notices(self) -> AsyncIterator[Notice]:
        """The notices of watched leases, as they come, for as long as the connection lives
        (ConnectionFailed when it ends). Calls on the client go on meanwhile, from other
        tasks: the wait for notices steps aside for each."""
        while True:
            while self._notices:
                yield self._notices.popleft()
            await self._wait_for_notices()

    async def _wait_for_notices(self) -> None:
        if self._broken is not None:
            raise ConnectionFailed(f"connection to {self.peer} unusable: {self._broken}")
        self._listeners_queued += 1
        try:
            await self._lock.acquire()
        finally:
            self._listeners_queued -= 1
        try:
            if self._broken is not None:
                raise ConnectionFailed(f"connection to {self.peer} unusable: {self._broken}")
            if self._lock.statistics().tasks_waiting > self._listeners_queued:
                return  # a call waits: it goes first, its replies may bring notices too
            codec = self._codec
            with trio.CancelScope() as self._listening:
                try:
                    calls.decode_notices(
                        codec, self._notices
                    )  # bytes may have come behind the last reply
                    while not self._notices:
                        # trio's receive is atomic under cancellation: bytes are not lost.
                        data = await self._stream.receive_some(RECEIVE_SIZE)
                        if not data:
                            raise trio.BrokenResourceError("the server closed the connection")
                        codec.feed(data if isinstance(data, bytes) else bytes(data))
                        calls.decode_notices(codec, self._notices)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    reason = f"the connection broke ({exc or type(exc).__name__})"
                    raise await self._break(reason) from None
                except ProtocolError as exc:
                    await self._break(f"a reply did not follow the protocol ({exc})")
                    raise
                finally:
                    self._listening = None
        finally:
            self._lock.release()

    async def pipeline(self, requests: Sequence[Request]) -> list[Reply]:
        """Send every request in one write and return their replies in order. Refusals come
        back as ErrorReply values, not exceptions; connection failures still raise."""
        replies = await self._exchange(requests)
        return [
            calls.complete(request, reply) for request, reply in zip(requests, replies, strict=True)
        ]

    async def _run(self, call: Call[T]) -> T:
        (reply,) = await self._exchange((call.request,))
        return call.result(call.request, reply)

    async def _exchange(self, requests: Sequence[Request]) -> list[Reply]:
        if self._broken is not None:
            raise ConnectionFailed(f"connection to {self.peer} unusable: {self._broken}")
        if not requests:
            return []
        if self._listening is not None:
            self._listening.cancel()  # a wait for notices steps aside
        async with self._lock:
            if self._broken is not None:
                raise ConnectionFailed(f"connection to {self.peer} unusable: {self._broken}")
            try:
                payload = b"".join([self._codec.encode_request(request) for request in requests])
                # The last point where a cancellation finds nothing of this batch sent.
                await trio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                self._forget_unsent()
                raise
            try:
                with trio.fail_after(self.timeout):
                    await self._stream.send_all(payload)
                    replies = await self._receive(len(requests))
                    self._first = None
                    return replies
            except trio.TooSlowError:
                raise await self._wrong_protocol(requests) or await self._break(
                    connecting.no_reply(self.timeout, self.peer, self.protocol.name)
                ) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                probe_at = self._tls_probe_at
                # Closed without a byte in reply: a TLS port does that to a plain client.
                closed_at_once = self._first is not None and not self._first
                if (
                    closed_at_once
                    and probe_at is not None
                    and await _speaks_tls(probe_at, self.timeout)
                ):
                    reason = connecting.speaks_tls_message(self.peer)
                    await self._break(reason)
                    raise WrongProtocol(reason) from None
                reason = f"the connection broke ({exc or type(exc).__name__})"
                raise await self._wrong_protocol(requests) or await self._break(reason) from None
            except ProtocolError as exc:
                wrong = await self._wrong_protocol(requests)
                if wrong is not None:
                    raise wrong from None
                await self._break(f"a reply did not follow the protocol ({exc})")
                raise
            except BaseException:
                # Cancelled mid-exchange: part of the batch may have gone out and replies may
                # still be on their way, which would answer the next request.
                self._broken = "a request was cancelled before its reply came"
                raise

    def _forget_unsent(self) -> None:
        # A codec may pair replies with the requests it encoded (native does). None of this
        # batch was sent and every earlier reply has been read, so a fresh codec is exactly
        # in step with the server.
        self._codec = self.protocol.client_codec(self._max_message)

    async def _receive(self, count: int) -> list[Reply]:
        replies: list[Reply] = []
        codec = self._codec
        while True:
            while (reply := codec.next_reply()) is not None:
                if type(reply) is Notice:
                    self._notices.append(reply)  # pushed between replies: not an answer
                    continue
                replies.append(reply)
                if len(replies) == count:
                    return replies
            data = await self._stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise trio.BrokenResourceError("the server closed the connection")
            first = self._first
            if first is not None and len(first) < FIRST_BYTES:
                first += data[: FIRST_BYTES - len(first)]
            codec.feed(data if isinstance(data, bytes) else bytes(data))

    async def _wrong_protocol(self, requests: Sequence[Request]) -> WrongProtocol | None:
        """WrongProtocol (the connection closed) when the first reply bytes are another
        protocol's; None when they are not, or a reply of ours came before."""
        if not self._first:
            return None
        reason = connecting.wrong_protocol(
            self.peer, self.protocol.name, requests, bytes(self._first), self._registry
        )
        if reason is None:
            return None
        await self._break(reason)
        return WrongProtocol(reason)

    async def _break(self, reason: str) -> ConnectionFailed:
        self._broken = reason
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
        return ConnectionFailed(f"{self.peer}: {reason}")
