"""The trio fleet client: ``await memlease.open_fleet(servers, protocol="uuid")``.

The same rules as the blocking fleet (memlease.client.fleet; the server rules in
memlease.client.server_set), with a pool of trio clients per server: a call takes an idle
connection or opens one, up to ``connections_per_server`` at once, and gives it back after
its reply, so concurrent tasks run concurrent requests.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import dns.resolver
import trio

from memlease.client import calls, connecting
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
from memlease.client.trio_client import AsyncClient, connect
from memlease.core.errors import ConnectionFailed, LeaseError, NoRoom, ServerBusy
from memlease.core.messages import IdKind, LeaseId, LeaseInfo, ServerStats
from memlease.protocol import DEFAULT_MAX_MESSAGE, ProtocolRegistry

T = TypeVar("T")

log = logging.getLogger("memlease.fleet")

DEFAULT_CONNECTIONS_PER_SERVER = 16
"""Connections the trio fleet opens to one server at most; more concurrent calls wait."""


async def open_fleet(
    servers: Iterable[str | Address] = (),
    protocol: str = "uuid",
    *,
    dns_name: str | None = None,
    port: int | None = None,
    resolve_every: float = DEFAULT_RESOLVE_EVERY,
    resolver: dns.resolver.Resolver | None = None,
    **options: Any,
) -> AsyncFleet:
    """A fleet over ``servers``, or over the servers DNS gives for ``dns_name`` (A/AAAA
    records with ``port``; SRV records without), looked up again every ``resolve_every``
    seconds. ``options``: those of :class:`AsyncFleet`. Connections open on first use.
    Raises ConnectionFailed when the first DNS lookup finds nothing."""
    discovery = None
    if dns_name is not None:
        discovery = DnsDiscovery(dns_name, port, resolve_every, resolver or dns.resolver.Resolver())
    fleet = AsyncFleet(servers, protocol, discovery=discovery, **options)
    if discovery is not None:
        await fleet._resolve(first=True)
    return fleet


class AsyncFleet:
    """Leases over many memlease servers, shared by any number of trio tasks. The methods
    and errors of :class:`memlease.Fleet`, awaited."""

    def __init__(
        self,
        servers: Iterable[str | Address],
        protocol: str = "uuid",
        *,
        timeout: float = DEFAULT_FLEET_TIMEOUT,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
        max_dead_timeout: float = DEFAULT_MAX_DEAD_TIMEOUT,
        stats_every: float = DEFAULT_STATS_EVERY,
        connections_per_server: int = DEFAULT_CONNECTIONS_PER_SERVER,
        max_message: int = DEFAULT_MAX_MESSAGE,
        registry: ProtocolRegistry | None = None,
        ssl_context: ssl.SSLContext | None = None,
        discovery: DnsDiscovery | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.protocol = connecting.find_protocol(protocol, registry)
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
        self._per_server = connections_per_server
        self._pools: dict[Address, _Pool] = {}
        self._discovery = discovery
        self._resolve_at = 0.0
        self._resolving = False

    async def __aenter__(self) -> AsyncFleet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection; the fleet opens them again if used."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()

    @property
    def servers(self) -> list[str]:
        """The servers new leases may go to, as ``host:port``."""
        return [state.name for state in self._servers.members]

    def down(self) -> list[str]:
        """The servers marked down now."""
        now = trio.current_time()
        return [state.name for state in self._servers.members if state.is_down(now)]

    # ------------------------------------------------------------ the methods

    async def lease(self, size: int, ttl_ms: int) -> Handle:
        """Lease ``size`` bytes for ``ttl_ms`` milliseconds on one live server; its handle.
        Raises NoRoom when every live server refused for room, ServerUnavailable when none
        could be reached, BadSize or BadTtl at once."""
        kind = self.protocol.id_kind
        state, granted = await self._place(size, calls.lease(size, ttl_ms, kind))
        return Handle(state.address, granted.lease_id)

    async def lease_many(self, count: int, size: int, ttl_ms: int) -> list[Handle]:
        """``count`` leases of ``size`` bytes for ``ttl_ms``, all on one live server, in one
        request, all or none (another server is tried on NoRoom). Raises as :meth:`lease`,
        and TooMany past the server's limits.max_batch."""
        kind = self.protocol.id_kind
        call = calls.lease_many(count, size, ttl_ms, kind)
        state, granted = await self._place(count * size, call)
        return [Handle(state.address, one.lease_id) for one in granted]

    async def renew_many(self, handles: Iterable[Handle | str], ttl_ms: int) -> list[Handle]:
        """Renew every live lease of ``handles``, one request per server; the handles not
        found. Raises ServerUnavailable (after the servers before it were done), BadTtl."""
        return await self._batch_by_server(handles, lambda ids: calls.renew_many(ids, ttl_ms))

    async def release_many(self, handles: Iterable[Handle | str]) -> list[Handle]:
        """Release every live lease of ``handles``, one request per server; the handles not
        found. Raises ServerUnavailable (after the servers before it were done)."""
        return await self._batch_by_server(handles, calls.release_many)

    async def _batch_by_server(
        self,
        handles: Iterable[Handle | str],
        call: Callable[[list[LeaseId]], Call[list[LeaseId]]],
    ) -> list[Handle]:
        missing: list[Handle] = []
        for state, ids in by_server(map(self._route, handles)):
            missing += [Handle(state.address, i) for i in await self._call(state, call(ids))]
        return missing

    async def _place(self, size: int, call: Call[T]) -> tuple[ServerState, T]:
        """``call`` (a grant of ``size`` bytes in all) on the first live server of the
        placement order that has room; that server and the call's result."""
        await self._resolve()
        servers = self._servers
        now = trio.current_time()
        candidates = servers.candidates(now)
        for state in candidates[:2]:
            if servers.needs_stats(state, now):
                # One marked down here is skipped below.
                with contextlib.suppress(ServerUnavailable):
                    stats = await self._call(state, calls.stats())
                    servers.update_stats(state, stats, trio.current_time())
        no_room: NoRoom | None = None
        busy: ServerBusy | None = None
        for state in servers.order(candidates, size):
            if state.is_down(trio.current_time()):
                continue
            try:
                granted = await self._call(state, call)
            except NoRoom as exc:
                servers.refused(state)
                no_room = exc
                continue
            except ServerBusy as exc:  # at a limit, or shutting down: another may take it
                busy = exc
                continue
            except ServerUnavailable:
                continue  # nothing granted, or a grant whose reply was lost expires
            servers.placed(state, size)
            return state, granted
        if no_room is not None:
            raise NoRoom(f"no live server has room for {size} B: {no_room}")
        if busy is not None:
            raise ServerBusy(f"every live server is busy: {busy}")
        raise ServerUnavailable(servers.none_live())

    async def get(self, handle: Handle | str) -> bytes:
        """The whole leased region. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.get(lease_id))

    async def set(self, handle: Handle | str, data: bytes) -> int:
        """Write ``data`` at offset 0; the lease's new version (0 on native). Raises
        LeaseNotFound, LeaseTooSmall (nothing written)."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.set_(lease_id, data))

    async def gets(self, handle: Handle | str) -> tuple[bytes, int]:
        """The whole leased region and its version, read together. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.gets(lease_id))

    async def cas(self, handle: Handle | str, version: int, data: bytes, offset: int = 0) -> int:
        """Write ``data`` at ``offset`` only if the lease is at ``version``; the new version.
        Raises VersionMismatch (``.current``), LeaseNotFound, LeaseTooSmall."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.cas(lease_id, version, data, offset))

    async def read(self, handle: Handle | str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``. Raises LeaseNotFound, LeaseTooSmall."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.read(lease_id, offset, length))

    async def write(self, handle: Handle | str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; the lease's new version. Raises LeaseNotFound,
        LeaseTooSmall (nothing written)."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.write(lease_id, offset, data))

    async def renew(self, handle: Handle | str, ttl_ms: int) -> None:
        """Set the lease's deadline to now + ``ttl_ms``. Raises LeaseNotFound, BadTtl."""
        lease_id, state = self._route(handle)
        await self._call(state, calls.renew(lease_id, ttl_ms))

    async def release(self, handle: Handle | str) -> None:
        """Free the lease at once. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        await self._call(state, calls.release(lease_id))

    async def stat(self, handle: Handle | str) -> LeaseInfo:
        """The lease's size and remaining ttl. Raises LeaseNotFound."""
        lease_id, state = self._route(handle)
        return await self._call(state, calls.stat(lease_id))

    async def stats(self) -> dict[str, ServerStats | ServerUnavailable]:
        """Each server's figures, or the error that says why it has none."""
        await self._resolve()
        figures: dict[str, ServerStats | ServerUnavailable] = {}
        for state in self._servers.members:
            try:
                figures[state.name] = stats = await self._call(state, calls.stats())
                self._servers.update_stats(state, stats, trio.current_time())
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

    async def _call(self, state: ServerState, call: Call[T]) -> T:
        """``call`` on ``state``'s server over a pooled connection. A failed connection marks
        the server down: ServerUnavailable."""
        if state.down_until:  # the clock is read only for a server that failed
            self._servers.check(state, trio.current_time())
        pool = self._pools.get(state.address)
        if pool is None:
            pool = self._pools[state.address] = _Pool(
                state, self.protocol.name, self._per_server, self._options
            )
        try:
            result = await pool.run(call)
        except ConnectionFailed as exc:
            # The other connections to it are as suspect: a restarted server knows none.
            await pool.aclose()
            raise self._servers.failed(state, trio.current_time(), exc) from None
        if state.failures:
            self._servers.answered(state)
        return result

    async def _resolve(self, *, first: bool = False) -> None:
        discovery = self._discovery
        now = trio.current_time()
        if discovery is None or self._resolving or (now < self._resolve_at and not first):
            return
        self._resolving = True
        self._resolve_at = now + discovery.resolve_every
        try:
            found = await trio.to_thread.run_sync(discovery.resolve, abandon_on_cancel=True)
        except ConnectionFailed as exc:
            if first:
                raise
            log.warning("%s; keeping the servers found before", exc)
            return
        finally:
            self._resolving = False
        self._servers.set_members(found)


class _Pool:
    """The connections to one server: a call takes an idle one, or opens one while fewer than
    ``limit`` are open, or waits for one to be given back. Taking an idle connection does
    not checkpoint (a CapacityLimiter would, costing a trip through the scheduler per call):
    the call itself does."""

    def __init__(
        self, state: ServerState, protocol: str, limit: int, options: dict[str, Any]
    ) -> None:
        self._state = state
        self._protocol = protocol
        self._options = options
        self._limit = limit
        self._open = 0
        self._idle: list[AsyncClient] = []
        self._waiting = trio.lowlevel.ParkingLot()

    async def run(self, call: Call[T]) -> T:
        client = self._idle.pop() if self._idle else await self._take()
        try:
            # The single client's own route for one call (see memlease.client.fleet).
            result = await client._run(call)
        except LeaseError:
            self._give(client)  # a refusal: the connection is in step
            raise
        except BaseException:
            # Broken, or cancelled mid-call (its reply may still come): never reused.
            await self._drop(client)
            raise
        self._give(client)
        return result

    async def _take(self) -> AsyncClient:
        for _ in range(1_000_000):  # bounded; every wake-up follows a connection's return
            if self._idle:
                return self._idle.pop()
            if self._open < self._limit:
                self._open += 1
                try:
                    return await connect(self._state.address, self._protocol, **self._options)
                except BaseException:
                    self._open -= 1
                    self._waiting.unpark()
                    raise
            await self._waiting.park()
        raise ConnectionFailed(f"{self._state.name}: no connection came free")

    def _give(self, client: AsyncClient) -> None:
        self._idle.append(client)
        if self._waiting:
            self._waiting.unpark()

    async def _drop(self, client: AsyncClient) -> None:
        self._open -= 1
        if self._waiting:
            self._waiting.unpark()
        with trio.CancelScope(shield=True):
            await client.aclose()

    async def aclose(self) -> None:
        """Close the idle connections (one in use closes when its call ends, if broken)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for client in idle:
            with trio.CancelScope(shield=True):
                await client.aclose()
