"""The blocking client: ``memlease.Client(address, protocol=...)``, plain sockets, no trio.

Same methods and errors as the trio client (memlease.client.trio_client); what each method
means lives in memlease.client.calls, shared by both. This module only moves bytes.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

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
from memlease.protocol import DEFAULT_MAX_MESSAGE, ClientCodec, ProtocolRegistry

T = TypeVar("T")


class Client:
    """A connection to a memlease server. Methods raise the typed errors of memlease.core.errors:
    LeaseNotFound, NoRoom, LeaseTooSmall, BadSize, BadTtl, ... for refusals; ConnectionFailed
    when the server cannot be reached or no reply comes within ``timeout`` seconds (the
    connection is then closed); ProtocolError for bytes that do not follow the protocol.

    A lease id is an int or a ``uuid.UUID``, or a UUID's string form; data is bytes (or a
    bytearray or memoryview), or a str, which is written as its UTF-8 bytes.

    Not for sharing between threads: give each thread its own client.
    """

    def __init__(
        self,
        address: tuple[str, int] | str,
        protocol: str = "native",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message: int = DEFAULT_MAX_MESSAGE,
        registry: ProtocolRegistry | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """With ``ssl_context`` (e.g. from memlease.tls.client_context), speak TLS and check
        the server's certificate against the address's host."""
        self.protocol = connecting.find_protocol(protocol, registry)
        host, port = connecting.parse_address(address)
        self.peer = f"{host}:{port}"
        self._address = (host, port)
        self._plain = ssl_context is None
        self.timeout = timeout
        self._max_message = max_message
        self._codec: ClientCodec = self.protocol.client_codec(max_message)
        self._broken: str | None = None
        # Notices of watched leases, as they came, until next_notice takes them.
        self._notices: deque[Notice] = deque()
        self._registry = registry
        # The first reply bytes, until a reply decodes: if none does, they tell which
        # protocol (or TLS) the port speaks instead.
        self._first: bytearray | None = bytearray()
        try:
            self._socket = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise ConnectionFailed(
                f"no connection to {self.peer} within {timeout:g} s; is the server up?"
            ) from None
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot connect to {self.peer} ({exc.strerror or exc}); is memlease serving "
                f"{protocol} there?"
            ) from None
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                self._socket = ssl_context.wrap_socket(self._socket, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                self._socket.close()
                raise ConnectionFailed(connecting.tls_failure(self.peer, exc)) from None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later calls raise ConnectionFailed."""
        self._broken = self._broken or "the client was closed"
        self._socket.close()

    def lease(self, size: int, ttl_ms: int, *, bound: bool = False) -> Granted:
        """Lease ``size`` bytes for ``ttl_ms`` milliseconds. ``bound``: the server releases
        the lease when this connection closes (for any reason), if its ttl has not ended it
        first. Raises NoRoom, BadSize, BadTtl."""
        return self._run(calls.lease(size, ttl_ms, self.protocol.id_kind, bound))

    def lease_many(
        self, count: int, size: int, ttl_ms: int, *, bound: bool = False
    ) -> list[Granted]:
        """``count`` leases of ``size`` bytes for ``ttl_ms``, in one request, all or none.
        Raises NoRoom (no lease left behind), TooMany (over the server's limits.max_batch),
        BadSize, BadTtl."""
        kind = self.protocol.id_kind
        return self._run(calls.lease_many(count, size, ttl_ms, kind, bound))

    def get(self, lease_id: IdLike) -> bytes:
        """The whole leased region. Raises LeaseNotFound."""
        return self._run(calls.get(lease_id))

    def set(self, lease_id: IdLike, data: DataLike) -> int:
        """Write ``data`` at offset 0; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        return self._run(calls.set_(lease_id, data))

    def gets(self, lease_id: IdLike) -> tuple[bytes, int]:
        """The whole leased region and its version, read together. Raises LeaseNotFound."""
        return self._run(calls.gets(lease_id))

    def cas(self, lease_id: IdLike, version: int, data: DataLike, offset: int = 0) -> int:
        """Write ``data`` at ``offset`` only if the lease is at ``version``; the new version.
        Raises VersionMismatch (``.current``: the lease's version; nothing written),
        LeaseNotFound, LeaseTooSmall."""
        return self._run(calls.cas(lease_id, version, data, offset))

    def read(self, lease_id: IdLike, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``. Raises LeaseNotFound, LeaseTooSmall."""
        return self._run(calls.read(lease_id, offset, length))

    def write(self, lease_id: IdLike, offset: int, data: DataLike) -> int:
        """Write ``data`` at ``offset``; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        return self._run(calls.write(lease_id, offset, data))

    def renew(self, lease_id: IdLike, ttl_ms: int) -> None:
        """Set the lease's deadline to now + ``ttl_ms``. Raises LeaseNotFound, BadTtl."""
        self._run(calls.renew(lease_id, ttl_ms))

    def release(self, lease_id: IdLike) -> None:
        """Free the lease at once. Raises LeaseNotFound."""
        self._run(calls.release(lease_id))

    def renew_many(self, lease_ids: Sequence[IdLike], ttl_ms: int) -> list[LeaseId]:
        """Renew every live lease of ``lease_ids`` to now + ``ttl_ms``, in one request; the
        ids that were not found. Raises BadTtl (nothing renewed), TooMany."""
        return self._run(calls.renew_many(lease_ids, ttl_ms))

    def release_many(self, lease_ids: Sequence[IdLike]) -> list[LeaseId]:
        """Release every live lease of ``lease_ids``, in one request; the ids that were not
        found. Raises TooMany."""
        return self._run(calls.release_many(lease_ids))

    def watch(self, lease_ids: IdLike | Sequence[IdLike]) -> None:
        """Have the server tell this connection when each lease ends (expired, released, or
        its bound connection closed): see next_notice. All or none:
        raises LeaseNotFound, watching none, if one is not live; TooMany past the server's
        limits.max_watches."""
        self._run(calls.watch(lease_ids))

    def unwatch(self, lease_ids: IdLike | Sequence[IdLike]) -> list[LeaseId]:
        """Stop the notices of these leases; the ids this connection was not watching (not an
        error)."""
        return self._run(calls.unwatch(lease_ids))

    def stat(self, lease_id: IdLike) -> LeaseInfo:
        """The lease's size, remaining ttl and version. Raises LeaseNotFound."""
        return self._run(calls.stat(lease_id))

    def stats(self) -> ServerStats:
        """The server's figures."""
        return self._run(calls.stats())

    def arena_map(self) -> ArenaMap:
        """A picture of the server's arena: how full each stretch of it is, in at most
        4096 one-byte cells (memlease.core.arena.MAP_CELLS)."""
        return self._run(calls.arena_map())

    def next_notice(self, timeout: float | None = None) -> Notice | None:
        """The next notice of a watched lease: one that came already, or the next to come
        within ``timeout`` seconds (None: wait for one); None if none came."""
        if self._notices:
            return self._notices.popleft()
        if self._broken is not None:
            raise ConnectionFailed(f"connection to {self.peer} unusable: {self._broken}")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            calls.decode_notices(
                self._codec, self._notices
            )  # bytes may have come behind the last reply
            while not self._notices:
                if deadline is None:
                    self._socket.settimeout(None)
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._socket.settimeout(remaining)
                data = self._socket.recv(RECEIVE_SIZE)
                if not data:
                    raise ConnectionResetError(0, "the server closed the connection")
                self._codec.feed(data)
                calls.decode_notices(self._codec, self._notices)
        except TimeoutError:
            return None
        except OSError as exc:
            raise self._break(f"the connection broke ({exc.strerror or exc})") from None
        except ProtocolError as exc:
            self._break(f"a reply did not follow the protocol ({exc})")
            raise
        return self._notices.popleft()

    def pipeline(self, requests: Sequence[Request]) -> list[Reply]:
        """Send every request in one write and return their replies in order. Refusals come
        back as ErrorReply values, not exceptions; connection failures still raise."""
        replies = self._exchange(requests)
        return [
            calls.complete(request, reply) for request, reply in zip(requests, replies, strict=True)
        ]

    def _run(self, call: Call[T]) -> T:
        (reply,) = self._exchange((call.request,))
        return call.result(call.request, reply)

    def _exchange(self, requests: Sequence[Request]) -> list[Reply]:
        if self._broken is not None:
            raise ConnectionFailed(f"connection to {self.peer} unusable: {self._broken}")
        if not requests:
            return []
        try:
            payload = b"".join([self._codec.encode_request(request) for request in requests])
        except BaseException:
            # A codec may pair replies with the requests it encoded (native does). None of
            # this batch was sent and every earlier reply has been read, so a fresh codec is
            # exactly in step with the server.
            self._codec = self.protocol.client_codec(self._max_message)
            raise
        try:
            self._socket.settimeout(self.timeout)
            self._socket.sendall(payload)
            replies = self._receive(len(requests), time.monotonic() + self.timeout)
            self._first = None
            return replies
        except TimeoutError:
            raise self._wrong_protocol(requests) or self._break(
                connecting.no_reply(self.timeout, self.peer, self.protocol.name)
            ) from None
        except OSError as exc:
            # Closed without a byte in reply: a TLS port does that to a plain client.
            closed_at_once = self._first is not None and not self._first and self._plain
            if (
                closed_at_once
                and isinstance(exc, ConnectionResetError)
                and connecting.speaks_tls(self._address, self.timeout)
            ):
                reason = connecting.speaks_tls_message(self.peer)
                self._break(reason)
                raise WrongProtocol(reason) from None
            raise self._wrong_protocol(requests) or self._break(
                f"the connection broke ({exc.strerror or exc})"
            ) from None
        except ProtocolError as exc:
            wrong = self._wrong_protocol(requests)
            if wrong is not None:
                raise wrong from None
            self._break(f"a reply did not follow the protocol ({exc})")
            raise
        except BaseException:
            # Interrupted mid-exchange: replies may still be on their way, and would answer
            # the next request.
            self._break("a request was interrupted before its reply came")
            raise

    def _receive(self, count: int, deadline: float) -> list[Reply]:
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
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._socket.settimeout(remaining)
            data = self._socket.recv(RECEIVE_SIZE)
            if not data:
                raise ConnectionResetError(0, "the server closed the connection")
            first = self._first
            if first is not None and len(first) < FIRST_BYTES:
                first += data[: FIRST_BYTES - len(first)]
            codec.feed(data)

    def _wrong_protocol(self, requests: Sequence[Request]) -> WrongProtocol | None:
        """WrongProtocol (the connection closed) when the first reply bytes are another
        protocol's; None when they are not, or a reply of ours came before."""
        if not self._first:
            return None
        reason = connecting.wrong_protocol(
            self.peer, self.protocol.name, requests, bytes(self._first), self._registry
        )
        if reason is None:
            return None
        self._break(reason)
        return WrongProtocol(reason)

    def _break(self, reason: str) -> ConnectionFailed:
        self._broken = reason
        self._socket.close()
        return ConnectionFailed(f"{self.peer}: {reason}")
