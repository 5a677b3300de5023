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
from memlease.client.calls import Call
from memlease.client.connecting import DEFAULT_TIMEOUT, RECEIVE_SIZE
from memlease.core.errors import ConnectionFailed, ProtocolError
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
    return AsyncClient(stream, spec, f"{host}:{port}", timeout=timeout, max_message=max_message)


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
    ) -> None:
        self.protocol = spec
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

    async def get(self, lease_id: LeaseId) -> bytes:
        """The whole leased region. Raises LeaseNotFound."""
        return await self._run(calls.get(lease_id))

    async def set(self, lease_id: LeaseId, data: bytes) -> int:
        """Write ``data`` at offset 0; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        return await self._run(calls.set_(lease_id, data))

    async def gets(self, lease_id: LeaseId) -> tuple[bytes, int]:
        """The whole leased region and its version, read together. Raises LeaseNotFound."""
        return await self._run(calls.gets(lease_id))

    async def cas(self, lease_id: LeaseId, version: int, data: bytes, offset: int = 0) -> int:
        """Write ``data`` at ``offset`` only if the lease is at ``version``; the new version.
        Raises VersionMismatch (``.current``: the lease's version; nothing written),
        LeaseNotFound, LeaseTooSmall."""
        return await self._run(calls.cas(lease_id, version, data, offset))

    async def read(self, lease_id: LeaseId, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``. Raises LeaseNotFound, LeaseTooSmall."""
        return await self._run(calls.read(lease_id, offset, length))

    async def write(self, lease_id: LeaseId, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        return await self._run(calls.write(lease_id, offset, data))

    async def renew(self, lease_id: LeaseId, ttl_ms: int) -> None:
        """Set the lease's deadline to now + ``ttl_ms``. Raises LeaseNotFound, BadTtl."""
        await self._run(calls.renew(lease_id, ttl_ms))

    async def release(self, lease_id: LeaseId) -> None:
        """Free the lease at once. Raises LeaseNotFound."""
        await self._run(calls.release(lease_id))

    async def renew_many(self, lease_ids: Sequence[LeaseId], ttl_ms: int) -> list[LeaseId]:
        """Renew every live lease of ``lease_ids`` to now + ``ttl_ms``, in one request; the
        ids that were not found. Raises BadTtl (nothing renewed), TooMany."""
        return await self._run(calls.renew_many(lease_ids, ttl_ms))

    async def release_many(self, lease_ids: Sequence[LeaseId]) -> list[LeaseId]:
        """Release every live lease of ``lease_ids``, in one request; the ids that were not
        found. Raises TooMany."""
        return await self._run(calls.release_many(lease_ids))

    async def watch(self, lease_ids: LeaseId | Sequence[LeaseId]) -> None:
        """Have the server tell this connection when each lease ends (expired, released, or
        its bound connection closed): see notices. All or none:
        raises LeaseNotFound, watching none, if one is not live; TooMany past the server's
        limits.max_watches."""
        await self._run(calls.watch(calls.ids_of(lease_ids)))

    async def unwatch(self, lease_ids: LeaseId | Sequence[LeaseId]) -> list[LeaseId]:
        """Stop the notices of these leases; the ids this connection was not watching (not an
        error)."""
        return await self._run(calls.unwatch(calls.ids_of(lease_ids)))

    async def stat(self, lease_id: LeaseId) -> LeaseInfo:
        """The lease's size, remaining ttl and version. Raises LeaseNotFound."""
        return await self._run(calls.stat(lease_id))

    async def stats(self) -> ServerStats:
        """The server's figures."""
        return await self._run(calls.stats())

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
                    self._decode_notices(codec)  # bytes may have come behind the last reply
                    while not self._notices:
                        # trio's receive is atomic under cancellation: bytes are not lost.
                        data = await self._stream.receive_some(RECEIVE_SIZE)
                        if not data:
                            raise trio.BrokenResourceError("the server closed the connection")
                        codec.feed(data if isinstance(data, bytes) else bytes(data))
                        self._decode_notices(codec)
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

    def _decode_notices(self, codec: ClientCodec) -> None:
        while (reply := codec.next_reply()) is not None:
            if type(reply) is not Notice:
                raise ProtocolError(f"a {type(reply).__name__} came with no request")
            self._notices.append(reply)

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
                    return await self._receive(len(requests))
            except trio.TooSlowError:
                raise await self._break(
                    connecting.no_reply(self.timeout, self.peer, self.protocol.name)
                ) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                reason = f"the connection broke ({exc or type(exc).__name__})"
                raise await self._break(reason) from None
            except ProtocolError as exc:
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
            codec.feed(data if isinstance(data, bytes) else bytes(data))

    async def _break(self, reason: str) -> ConnectionFailed:
        self._broken = reason
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
        return ConnectionFailed(f"{self.peer}: {reason}")
