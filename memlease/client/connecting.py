"""What both clients need to reach a server: the address, the protocol, how long to wait, and
the messages that say why a connection or a call failed."""

from __future__ import annotations

import ssl

from memlease.core.errors import ConfigError
from memlease.protocol import ProtocolRegistry, ProtocolSpec, default_registry

DEFAULT_TIMEOUT = 10.0
"""Seconds a client waits to connect, or for one reply, before giving up."""

RECEIVE_SIZE = 65536
"""Bytes asked of the socket per receive: below malloc's mmap threshold, so a short read does
not pay for mapping and unmapping a large buffer."""


def tls_failure(peer: str, cause: BaseException) -> str:
    """Why a TLS handshake with ``peer`` failed, and what to check."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS with {peer}: the server's certificate is not trusted "
            f"({cause.verify_message}); pass the CA that signed it (--ca PATH)"
        )
    reason = getattr(cause, "reason", None) or cause or type(cause).__name__
    return (
        f"TLS handshake with {peer} failed ({reason}); does the server speak TLS there, and "
        "does it require a client certificate (--cert, --key)?"
    )


def no_reply(timeout: float, peer: str, protocol: str) -> str:
    """Why a call gave up waiting; a server of another protocol stays silent like this."""
    return f"no reply within {timeout:g} s (is the server at {peer} speaking {protocol}?)"


def find_protocol(name: str, registry: ProtocolRegistry | None) -> ProtocolSpec:
    """The protocol called ``name``; ConfigError naming the installed ones if there is none."""
    try:
        return (registry or default_registry()).get(name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None


def parse_address(address: tuple[str, int] | str) -> tuple[str, int]:
    """``("host", port)``, ``"host:port"`` or ``"[v6addr]:port"`` as a (host, port) pair."""
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"server address {address!r} is not HOST:PORT (e.g. 127.0.0.1:7411)")
    return host.strip("[]"), int(port)
