"""What both clients need to reach a server: the address, the protocol, how long to wait, and
the messages that say why a connection or a call failed."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

from memlease.core.errors import ConfigError
from memlease.core.messages import Request
from memlease.protocol import (
    DEFAULT_MAX_MESSAGE,
    ProtocolRegistry,
    ProtocolSpec,
    default_registry,
)

DEFAULT_TIMEOUT = 10.0
"""Seconds a client waits to connect, or for one reply, before giving up."""

FIRST_BYTES = 4096
"""Bytes of a connection's first replies kept to tell which protocol answered, if not ours."""
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")  # a TLS alert or handshake record

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


def wrong_protocol(
    peer: str,
    protocol: str,
    requests: Sequence[Request],
    received: bytes,
    registry: ProtocolRegistry | None,
) -> str | None:
    """Why the reply bytes ``received`` (a connection's first) are not ``protocol``'s, when
    they are another's: the installed protocols whose client makes a reply of them, given
    the same requests; or TLS. None when no other protocol explains them."""
    if received[:2] in _TLS_RECORDS:
        return speaks_tls_message(peer)
    reg = registry or default_registry()
    others = []
    for name in reg.names():
        if name == protocol:
            continue
        try:
            codec = reg.get(name).client_codec(DEFAULT_MAX_MESSAGE)
            for request in requests:
                try:
                    codec.encode_request(request)
                except Exception:  # a request that protocol cannot carry: pair none
                    break
            codec.feed(received)
            if codec.next_reply() is not None:
                others.append(name)
        except Exception:  # any plugin's codec may refuse foreign bytes in its own way
            continue
    if not others:
        return None
    return (
        f"the port at {peer} speaks another protocol, not {protocol} "
        f"(try --protocol {' or '.join(others)})"
    )


def speaks_tls(address: tuple[str, int], timeout: float) -> bool:
    """Whether a TLS handshake succeeds at ``address`` (certificate unchecked: this only asks
    what the port speaks, and sends no data over it). A TLS server closes a plain client's
    connection without a byte, so the closed connection alone cannot say."""
    probe = probe_context()
    try:
        with (
            socket.create_connection(address, timeout=min(timeout, 5.0)) as plain,
            probe.wrap_socket(plain, server_hostname=address[0]),
        ):
            return True
    except (OSError, ValueError):
        return False


def probe_context() -> ssl.SSLContext:
    """A TLS context that only asks whether a port speaks TLS: it checks no certificate."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    return probe


def speaks_tls_message(peer: str) -> str:
    return f"the port at {peer} speaks TLS (try --tls, or --ca PATH)"
