"""The metrics endpoint: ``GET /metrics`` over HTTP/1.1 (h11), in the server's own nursery.

Held to limits like the lease ports: one request per connection, the whole of it (request
in, reply out) within ``request_timeout``; a request head larger than
:data:`MAX_HEADER_BYTES` gets 431 and the connection is closed; at most
:data:`MAX_METRICS_CONNECTIONS` connections at once, any more are closed on accept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("memlease")

PATH = b"/metrics"
MAX_HEADER_BYTES = 8192
"""The largest request head (request line and headers) read: a scraper sends a few hundred."""
MAX_METRICS_CONNECTIONS = 16
"""Metrics connections open at once; a scraper needs one."""
_RECEIVE_SIZE = 4096


class MetricsEndpoint:
    """Serves ``registry`` to HTTP clients; ``request_timeout``: the time one connection
    may take from accept to its reply sent."""

    def __init__(self, registry: CollectorRegistry, request_timeout: float) -> None:
        self.registry = registry
        self.request_timeout = request_timeout
        self.open = 0

    async def serve(self, listeners: Iterable[trio.SocketListener]) -> None:
        """Accept on ``listeners`` until cancelled."""
        await trio.serve_listeners(self.handle, list(listeners))

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection: one request, one reply, then close. Never raises for the
        client's doing."""
        if self.open >= MAX_METRICS_CONNECTIONS:
            await trio.aclose_forcefully(stream)
            return
        self.open += 1
        try:
            with trio.move_on_after(self.request_timeout):
                await self._answer(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            self.open -= 1
            await trio.aclose_forcefully(stream)

    async def _answer(self, stream: trio.SocketStream) -> None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            request = await _next_request(http, stream)
        except h11.RemoteProtocolError as exc:
            await _send(http, stream, exc.error_status_hint, b"bad request\n")
            return
        if request is None:
            return  # closed before a whole request head came
        target = request.target.partition(b"?")[0]
        if request.method != b"GET":
            await _send(http, stream, 405, b"use GET\n", extra=[(b"allow", b"GET")])
        elif target != PATH:
            await _send(http, stream, 404, b"not found: the metrics are at /metrics\n")
        else:
            await _send(
                http,
                stream,
                200,
                generate_latest(self.registry),
                content_type=CONTENT_TYPE_LATEST.encode(),
            )


async def _next_request(http: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(_RECEIVE_SIZE))
            continue
        return event if isinstance(event, h11.Request) else None


async def _send(
    http: h11.Connection,
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    head = [
        (b"content-type", content_type),
        *(extra or []),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    try:
        data = http.send(h11.Response(status_code=status, headers=head))
        data += http.send(h11.Data(data=body)) or b""
        data += http.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return  # h11 will not answer this request (e.g. an HTTP/1.0 oddity): just close
    if data:
        await stream.send_all(data)
