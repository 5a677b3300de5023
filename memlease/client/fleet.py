"""The blocking fleet client: ``memlease.Fleet(servers, protocol="uuid")``, leases spread over
many servers, each lease named by a :class:`~memlease.client.handle.Handle`.

``lease()`` places a new lease on one live server (the policy is in
memlease.client.server_set) and returns its handle; every other method routes by the handle
to one persistent blocking client (memlease.client.blocking) per server. A server that stops
answering is marked down and its calls fail at once with ServerUnavailable until its back-off
ends.

A new method of the single clients that names one lease is two lines here (and in
memlease.client.trio_fleet): ``lease_id, state = self._route(handle)`` and
``return self._call(state, calls.new_op(lease_id, ...))``. A batch over many handles groups
them by server first, one call per server.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import dns.resolver

from memlease.client import calls, connecting
from memlease.client.blocking import Client
from memlease.client.calls import Call
from memlease.client.discovery import DEFAULT_RESOLVE_EVERY, DnsDiscovery
from memlease.client.handle import Handle, routable
from memlease.client.server_set import (
    DEFAULT_DEAD_TIMEOUT,
    DEFAULT_FLEET_TIMEOUT,
    DEFAULT_MAX_DEAD_TIMEOUT,
    DEFAULT_STATS_EVERY,
    Address,
    ServerSet,
    ServerState,
    ServerUnavailable,
    as_address,
    by_server,
)
from memlease.core.errors import ConnectionFailed, NoRoom, ProtocolError, ServerBusy
from memlease.core.messages import IdKind, LeaseId, LeaseInfo, ServerStats
from memlease.protocol import DEFAULT_MAX_MESSAGE, ProtocolRegistry, ProtocolSpec

T = TypeVar("T")

log = logging.getLogger("memlease.fleet")


class Fleet:
    """Leases over many memlease servers, from one thread. ``servers``: addresses as
    ``"host:port"``, ``"[v6addr]:port"`` or (host, port). Methods raise what the single
    client's do (LeaseNotFound, NoRoom, ...), plus ServerUnavailable (a ConnectionFailed) for
    a lease whose server is down, and BadHandle for a handle that is not one.

    ``timeout`` bounds each connect and each reply; past it the server is marked down for
    ``dead_timeout`` seconds (doubled per failure in a row, up to ``max_dead_timeout``).
    Not for sharing between threads: give each thread its own fleet.
    """

    def __init__(
        self,
        servers: Iterable[str | Address],
        protocol: str = "uuid",
        *,
        timeout: float = DEFAULT_FLEET_TIMEOUT,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
        max_dead_timeout: float = DEFAULT_MAX_DEAD_TIMEOUT,
        stats_every: float = DEFAULT_STATS_EVERY,
        max_message: int = DEFAULT_MAX_MESSAGE,
        registry: ProtocolRegistry | None = None,
        ssl_context: ssl.SSLContext | None = None,
        discovery: DnsDiscovery | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.protocol: ProtocolSpec = connecting.find_protocol(protocol, registry)
        self.timeout = timeout
        self._id_type = uuid.UUID if self.protocol.id_kind is IdKind.UUID else int
        self._options: dict[str, Any] = {
            "timeout": timeout,
            "max_message": max_message,
            "registry": registry,
            "ssl_context": ssl_context,
        }
        self._servers = ServerSet(
            dead_timeout, max_dead_timeout, stats_every, rng or random.Random()
        )
        self._servers.set_members(as_address(server) for server in servers)
        self._clients: dict[Address, Client] = {}
        self._discovery = discovery
        self._resolve_at = 0.0
        if discovery is not None:
            self._resolve(time.monotonic(), first=True)

    @classmethod
    def from_dns(
        cls,
        name: str,
        port: int | None = None,
        protocol: str = "uuid",
        *,
        resolve_every: float = DEFAULT_RESOLVE_EVERY,
        resolver: dns.resolver.Resolver | None = None,
        **options: Any,
    ) -> Fleet:
        """The fleet whose servers DNS names: the A/AAAA records of ``name`` (a headless
        Service's), each with ``port``; with no port, the SRV records of ``name``. Looked up
        again every ``resolve_every`` seconds (on the next lease or stats after that), so new
        servers join and removed ones take no new leases. Raises ConnectionFailed when the
        first lookup finds nothing."""
        discovery = DnsDiscovery(name, port, resolve_every, resolver or dns.resolver.Resolver())
        return cls((), protocol, discovery=discovery, **options)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; the fleet opens them again if used."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    @property
    def servers(self) -> list[str]:
        """The servers new leases may go to, as ``host:port``."""
        return [state.name for state in self._servers.members]

    def down(self) -> list[str]:
        """The servers marked down now."""
        now = time.monotonic()
        return [state.name for state in self._servers.members if state.is_down(now)]

    # ------------------------------------------------------------ the methods

    def lease(self, size: int, ttl_ms: int) -> Handle:
        """Lease ``size`` bytes for ``ttl_ms`` milliseconds on one live server; its handle.
        Raises NoRoom when every live server refused for room, ServerUnavailable when none
        could be reached, BadSize or BadTtl at once."""
        kind = self.protocol.id_kind
        state, granted = self._place(size, calls.lease(size, ttl_ms, kind))
        return Handle(state.address, granted.lease_id)

    def lease_many(self, count: int, size: int, ttl_ms: int) -> list[Handle]:
        """``count`` leases of ``size`` bytes for ``ttl_ms``, all on one live server, in one
        request, all or none (another server is tried on NoRoom). Raises as :meth:`lease`,
        and TooMany past the server's limits.max_batch."""
        kind = self.protocol.id_kind
        state, granted = self._place(count * size, calls.lease_many(count, size, ttl_ms, kind))
        return [Handle(state.address, one.lease_id) for one in granted]

    def renew_many(self, handles: Iterable[Handle | str], ttl_ms: int) -> list[Handle]:
        """Renew every live lease of ``handles``, one request per server; the handles not
        found. Raises ServerUnavailable (after the servers before it were done), BadTtl."""
        return self._batch_by_server(handles, lambda ids: calls.renew_many(ids, ttl_ms))

    def release_many(self, handles: Iterable[Handle | str]) -> list[Handle]:
        """Release every live lease of ``handles``, one request per server; the handles not
        found. Raises ServerUnavailable (after the servers before it were done)."""
        return self._batch_by_server(handles, calls.release_many)

    def _batch_by_server(
        self,
        handles: Iterable[Handle | str],
        call: Callable[[list[LeaseId]], Call[list[LeaseId]]],
    ) -> list[Handle]:
        missing: list[Handle] = []
        for state, ids in by_server(map(self._route, handles)):
            missing += [Handle(state.address, i) for i in self._call(state, call(ids))]
        return missing

    def _place(self, size: int, call: Call[T]) -> tuple[ServerState, T]:
        """``call`` (a grant of ``size`` bytes in all) on the first live server of the
        placement order that has room; that server and the call's result."""
        now = time.monotonic()
        self._resolve(now)
        servers = self._servers
        candidates = servers.candidates(now)
        for state in candidates[:2]:
            if servers.needs_stats(state, now):
                # One marked down here is skipped below.
                with contextlib.suppress(ServerUnavailable):
                    servers.update_stats(state, self._call(state, calls.stats()), now)
        no_room: NoRoom | None = None
        busy: ServerBusy | None = None
        for state in servers.order(candidates, size):
            if state.is_down(time.monotonic()):
                continue
            try:
                granted = self._call(state, call)
            except NoRoom as exc:
                servers.refused(state)
                no_room = exc
                continue
            except ServerBusy as exc:  # at a limit, or shutting down: another may take it
                busy = exc
                continue
            except ServerUnavailable:
                # Nothing was granted, or a grant whose reply was lost expires with its ttl.
                continue
            servers.placed(state, size)
            return state, granted
        if no_room is not None:
            raise NoRoom(f"no live server has room for {size} B: {no_room}")
        if busy is not None:
            raise ServerBusy(f"every live server is busy: {busy}")
        raise ServerUnavailable(self._servers.none_live())

    def get(self, handle: Handle | str) -> bytes:
        """The whole leased region. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.get(lease_id))

    def set(self, handle: Handle | str, data: bytes) -> int:
        """Write ``data`` at offset 0; the lease's new version (0 on native). Raises
        LeaseNotFound, LeaseTooSmall (nothing written)."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.set_(lease_id, data))

    def gets(self, handle: Handle | str) -> tuple[bytes, int]:
        """The whole leased region and its version, read together. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.gets(lease_id))

    def cas(self, handle: Handle | str, version: int, data: bytes, offset: int = 0) -> int:
        """Write ``data`` at ``offset`` only if the lease is at ``version``; the new version.
        Raises VersionMismatch (``.current``), LeaseNotFound, LeaseTooSmall."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.cas(lease_id, version, data, offset))

    def read(self, handle: Handle | str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``. Raises LeaseNotFound, LeaseTooSmall."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.read(lease_id, offset, length))

    def write(self, handle: Handle | str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.write(lease_id, offset, data))

    def renew(self, handle: Handle | str, ttl_ms: int) -> None:
        """Set the lease's deadline to now + ``ttl_ms``. Raises LeaseNotFound, BadTtl."""
        lease_id, state = self._route(handle)
        self._call(state, calls.renew(lease_id, ttl_ms))

    def release(self, handle: Handle | str) -> None:
        """Free the lease at once. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        self._call(state, calls.release(lease_id))

    def stat(self, handle: Handle | str) -> LeaseInfo:
        """The lease's size and remaining ttl. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        return self._call(state, calls.stat(lease_id))

    def stats(self) -> dict[str, ServerStats | ServerUnavailable]:
        """Each server's figures, or the error that says why it has none."""
        now = time.monotonic()
        self._resolve(now)
        figures: dict[str, ServerStats | ServerUnavailable] = {}
        for state in self._servers.members:
            try:
                figures[state.name] = stats = self._call(state, calls.stats())
                self._servers.update_stats(state, stats, time.monotonic())
            except ServerUnavailable as exc:
                figures[state.name] = exc
        return figures

    # ------------------------------------------------------------ routing

    def _route(self, handle: Handle | str) -> tuple[LeaseId, ServerState]:
        """The handle's id and its server; every method but lease starts here."""
        # The common case, a Handle of the fleet's id kind, in two type checks.
        if type(handle) is not Handle or type(handle.lease_id) is not self._id_type:
            handle = routable(handle, self.protocol.id_kind, self.protocol.name)
        return handle.lease_id, self._servers.state(handle.server)

    def _call(self, state: ServerState, call: Call[T]) -> T:
        """``call`` on ``state``'s server, over its persistent connection (opened if need
        be). A failed connection marks the server down: ServerUnavailable."""
        if state.down_until:  # the clock is read only for a server that failed
            self._servers.check(state, time.monotonic())
        client = self._clients.get(state.address)
        try:
            if client is None:
                client = Client(state.address, self.protocol.name, **self._options)
                self._clients[state.address] = client
            # The single client's own route for one call: a fleet call costs a dict lookup
            # more than a direct one (benchmarks/fleet_routing.py).
            result = client._run(call)
        except ConnectionFailed as exc:
            self._drop(state)
            raise self._servers.failed(state, time.monotonic(), exc) from None
        except (ProtocolError, KeyboardInterrupt):
            self._drop(state)  # the client is out of step with the server: never reused
            raise
        if state.failures:
            self._servers.answered(state)
        return result

    def _drop(self, state: ServerState) -> None:
        client = self._clients.pop(state.address, None)
        if client is not None:
            client.close()

    def _resolve(self, now: float, *, first: bool = False) -> None:
        if self._discovery is None or now < self._resolve_at:
            return
        self._resolve_at = now + self._discovery.resolve_every
        try:
            found = self._discovery.resolve()
        except ConnectionFailed as exc:
            if first:
                raise
            log.warning("%s; keeping the servers found before", exc)
            return
        self._servers.set_members(found)
