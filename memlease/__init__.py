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
    Unsupported,
    WrongProtocol,
)

if TYPE_CHECKING:
    from memlease.client.blocking import Client
    from memlease.client.trio_client import AsyncClient, connect

__version__ = "0.1.0"

# The clients load on first use, so that importing memlease for its errors or messages does
# not pay for trio.
_LAZY = {
    "connect": "memlease.client.trio_client",
    "AsyncClient": "memlease.client.trio_client",
    "Client": "memlease.client.blocking",
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
    "BadRequest",
    "BadSize",
    "BadTtl",
    "Client",
    "ConfigError",
    "ConnectionFailed",
    "ErrorCode",
    "InternalError",
    "LeaseError",
    "LeaseNotFound",
    "LeaseTooSmall",
    "MemleaseError",
    "NoRoom",
    "ProtocolError",
    "ServerBusy",
    "Unsupported",
    "WrongProtocol",
    "__version__",
    "connect",
]
