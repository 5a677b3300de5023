"""memlease: lease remote memory by id, over pluggable wire protocols."""

from memlease.errors import (
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
)

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "BadSize",
    "BadTtl",
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
    "__version__",
]
