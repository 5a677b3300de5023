"""One flat hierarchy of memlease errors.

Every refusal the service can give has an :class:`ErrorCode`, carried on the wire by the
protocols that have error replies, and an exception class raised by the lease table and the
clients. Messages say what happened and what to do about it.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Why a request was refused. The numbers are part of the network and uuid wire formats."""

    NO_ROOM = 1
    NOT_FOUND = 2
    OUT_OF_RANGE = 3
    BAD_SIZE = 4
    BAD_TTL = 5
    BAD_REQUEST = 6
    UNSUPPORTED = 7
    SERVER_BUSY = 8
    INTERNAL = 9
    TOO_MANY = 10
    VERSION_MISMATCH = 11


class MemleaseError(Exception):
    """Base of every error memlease raises on purpose."""


class LeaseError(MemleaseError):
    """The service refused a request; ``code`` says why."""

    code: ErrorCode = ErrorCode.INTERNAL


class NoRoom(LeaseError):
    """The arena has no free block large enough for the lease."""

    code = ErrorCode.NO_ROOM


class LeaseNotFound(LeaseError):
    """No live lease has this id: it expired, was released, or was never granted."""

    code = ErrorCode.NOT_FOUND


class LeaseTooSmall(LeaseError):
    """The data, or the offset and length, reach past the end of the lease."""

    code = ErrorCode.OUT_OF_RANGE


class BadSize(LeaseError):
    """The size asked for is zero, negative or above the largest lease."""

    code = ErrorCode.BAD_SIZE


class BadTtl(LeaseError):
    """The ttl asked for is zero, negative or above the maximum ttl."""

    code = ErrorCode.BAD_TTL


class BadRequest(LeaseError):
    """The server could not parse the request."""

    code = ErrorCode.BAD_REQUEST


class Unsupported(LeaseError):
    """The protocol or server does not offer this operation."""

    code = ErrorCode.UNSUPPORTED


class ServerBusy(LeaseError):
    """The server is at a limit (connections, shutdown) and refused the request."""

    code = ErrorCode.SERVER_BUSY


class InternalError(LeaseError):
    """The server failed in a way that is not the client's fault."""

    code = ErrorCode.INTERNAL


class TooMany(LeaseError):
    """The request names more leases than the server takes in one request (a batch over
    ``limits.max_batch``), or more than a connection may watch (``limits.max_watches``)."""

    code = ErrorCode.TOO_MANY


class VersionMismatch(LeaseError):
    """A compare-and-set found the lease at another version and wrote nothing. ``current``
    is the lease's version: read it again (``gets``) and retry from there."""

    code = ErrorCode.VERSION_MISMATCH

    def __init__(self, message: str, current: int | None = None) -> None:
        super().__init__(message)
        self.current = current


class ProtocolError(MemleaseError):
    """Bytes that do not follow the wire format: the message says what was wrong."""


class ConfigError(MemleaseError):
    """A configuration file or flag is invalid: the message names the key and the value."""


class ConnectionFailed(MemleaseError):
    """The client could not reach the server, or the connection broke mid-request."""


class WrongProtocol(ConnectionFailed):
    """The port answered in another protocol (or TLS): the message names the likely one."""


_BY_CODE: dict[ErrorCode, type[LeaseError]] = {
    cls.code: cls
    for cls in (
        NoRoom,
        LeaseNotFound,
        LeaseTooSmall,
        BadSize,
        BadTtl,
        BadRequest,
        Unsupported,
        ServerBusy,
        InternalError,
        TooMany,
        VersionMismatch,
    )
}


def not_found_message(lease_id: object) -> str:
    """What a user is told of an id with no live lease, whichever protocol asked."""
    return f"lease {lease_id} not found (expired, released or never granted)"


def error_for_code(code: ErrorCode, message: str) -> LeaseError:
    """The exception a client raises for an error reply with ``code``."""
    return _BY_CODE.get(code, InternalError)(message)
