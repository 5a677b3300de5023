"""A fleet lease's name: the server that holds it and its id there, ``HOST:PORT/ID``.

A handle is all a fleet client needs to reach a lease, so it can be passed between processes
as text: ``str(handle)`` writes it, :meth:`Handle.parse` reads it back. IPv6 hosts are written
in brackets (``[::1]:7413/...``), as in URLs, so the port's colon is never ambiguous.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from memlease.core.errors import MemleaseError
from memlease.core.messages import IdKind, LeaseId


class BadHandle(MemleaseError, ValueError):
    """Text that is not a lease handle (``HOST:PORT/ID``), or a handle whose id is of the
    other kind than the fleet's protocol carries."""


def format_server(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` as (host, port); BadHandle saying what it expects."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        ok = bool(bracket) and rest.startswith(":")
        port = rest[1:]
    else:
        host, colon, port = text.rpartition(":")
        # An unbracketed host with a colon in it is an IPv6 address missing its brackets.
        ok = bool(colon) and ":" not in host
    if not ok or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadHandle(
            f"server {text!r} is not HOST:PORT (e.g. 10.0.0.7:7413, or [fd00::7]:7413 for IPv6)"
        )
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Handle:
    """A lease on one server of a fleet: ``server`` is (host, port), ``lease_id`` its id there
    (a UUID for the uuid protocol, an int for native and network)."""

    server: tuple[str, int]
    lease_id: LeaseId

    def __str__(self) -> str:
        return f"{format_server(*self.server)}/{self.lease_id}"

    @classmethod
    def parse(cls, text: str) -> Handle:
        """The handle ``str(handle)`` wrote: ``HOST:PORT/ID``. Raises BadHandle."""
        address, slash, id_text = text.strip().rpartition("/")
        if not slash:
            raise BadHandle(
                f"{text!r} is not a lease handle: expected HOST:PORT/ID, "
                "e.g. 10.0.0.7:7413/1b4e28ba-2fa1-11d2-883f-0016d3cca427"
            )
        return cls(parse_server(address), _parse_id(id_text, text))


def _parse_id(id_text: str, text: str) -> LeaseId:
    if id_text.isdigit() and id_text.isascii():
        value = int(id_text)
        if 0 < value < 2**31:
            return value
    else:
        try:
            return uuid.UUID(id_text)
        except ValueError:
            pass
    raise BadHandle(
        f"{text!r}: the id {id_text!r} is neither a UUID nor a positive integer below 2^31"
    )


def routable(handle: Handle | str, id_kind: IdKind, protocol: str) -> Handle:
    """``handle`` (or its text) checked to carry an id of ``id_kind``, the fleet protocol's."""
    if isinstance(handle, str):
        handle = Handle.parse(handle)
    if isinstance(handle.lease_id, int) is (id_kind is IdKind.UUID):
        kind = "UUIDs" if id_kind is IdKind.UUID else "integers"
        raise BadHandle(f"handle {handle}: protocol {protocol} ids are {kind}")
    return handle
