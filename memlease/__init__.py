"""memlease: lease remote memory by id, over pluggable wire protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memlease.core.errors import (
    BadRequest,
    BadSize,
    BadTtl,
    ConfigError,
    ConnectionFailed,
    ErrorCode,
    InternalError,
    LeaseError,
    LeaseNotFound,
    LeaseTooSmall,
    MemleaseError,
    NoRoom,
    ProtocolError,
    ServerBusy,
    TooMany,
    Unsupported,
    VersionMismatch,
    WrongProtocol,
)
from memlease.core.messages import EndReason, Notice

if TYPE_CHECKING:
    from memlease.client.blocking import Client
    from memlease.client.fleet import Fleet
    from memlease.client.handle import BadHandle, Handle
    from memlease.client.server_set import ServerUnavailable
    from memlease.client.trio_client import AsyncClient, connect
    from memlease.client.trio_fleet import AsyncFleet, open_fleet

__version__ = "0.1.0"

# The clients load on first use, so that importing memlease for its errors or messages does
# not pay for trio.
_LAZY = {
    "connect": "memlease.client.trio_client",
    "AsyncClient": "memlease.client.trio_client",
    "Client": "memlease.client.blocking",
    "Fleet": "memlease.client.fleet",
    "AsyncFleet": "memlease.client.trio_fleet",
    "open_fleet": "memlease.client.trio_fleet",
    "Handle": "memlease.client.handle",
    "BadHandle": "memlease.client.handle",
    "ServerUnavailable": "memlease.client.server_set",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memlease' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names, the lazily loaded clients among them; not typing's helpers.
    return sorted(__all__)


__all__ = [
    "AsyncClient",
    "AsyncFleet",
    "BadHandle",
    "BadRequest",
    "BadSize",
    "BadTtl",
    "Client",
    "ConfigError",
    "ConnectionFailed",
    "EndReason",
    "ErrorCode",
    "Fleet",
    "Handle",
    "InternalError",
    "LeaseError",
    "LeaseNotFound",
    "LeaseTooSmall",
    "MemleaseError",
    "NoRoom",
    "Notice",
    "ProtocolError",
    "ServerBusy",
    "ServerUnavailable",
    "TooMany",
    "Unsupported",
    "VersionMismatch",
    "WrongProtocol",
    "__version__",
    "connect",
    "open_fleet",
]
