"""The server's configuration: a TOML file plus command-line overrides, validated into one
frozen :class:`Config`.

``load_config()`` with no path reads the packaged ``memlease/default.toml``, a byte-for-byte
copy of ``conf/server.toml``. Every mistake raises :class:`~memlease.core.errors.ConfigError` with
one line naming the key (or flag) and the value, so ``memlease serve`` can print it and exit 2.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from memlease.core.errors import ConfigError
from memlease.protocol import ProtocolRegistry, default_registry
from memlease.server.budget import RECEIVE_ROOM, STREAM_SEND_ROOM

# Re-exported: callers import these from here, as they did before config_values.py.
from memlease.server.config_values import (
    LOG_LEVELS,
    Listener,
    to_count,
    to_listeners,
    to_log_format,
    to_log_level,
    to_ms,
    to_optional_count,
    to_optional_metrics_address,
    to_optional_path,
    to_optional_size,
    to_seconds,
    to_size,
    to_text,
)
from memlease.server.connection import ANSWER_ROOM
from memlease.units import format_size

MIN_MAX_MESSAGE = 1024
"""The smallest limits.max_message: room for every protocol's headers and error replies."""

REPLY_ROOM = 512
"""Bytes of max_message kept for a reply's headers and id beside a lease's data (the built-in
protocols need at most 28): a get of the largest lease must fit in one message."""


def least_connection_memory(config: Config) -> int:
    """The smallest limits.connection_memory that lets every connection read, the largest
    message arrive whole and one batch of replies go out; with less, some would wait for
    memory that never comes back."""
    return (
        config.max_message + ANSWER_ROOM + STREAM_SEND_ROOM + config.max_connections * RECEIVE_ROOM
    )


PER_CLIENT_SHARE = 4
"""Without limits.max_connections_per_client, one client may hold this fraction (1/4) of
limits.max_connections."""


DEFAULT_LISTENERS = (Listener("native", 7411), Listener("network", 7412), Listener("uuid", 7413))


@dataclass(frozen=True)
class Config:
    """Everything ``serve`` needs. Construct with keywords: fields may be added later."""

    host: str = "127.0.0.1"
    listeners: tuple[Listener, ...] = DEFAULT_LISTENERS
    arena_size: int = 64 * 1024 * 1024
    min_block: int = 32
    max_lease_size: int | None = None  # None: the arena's largest block (see largest_lease)
    max_ttl_ms: int = 24 * 3600 * 1000
    max_connections: int = 1024
    # None: a quarter of max_connections (see per_client_limit); 0: no per-client limit
    max_connections_per_client: int | None = None
    max_message: int = 64 * 1024 * 1024 + 4096
    # Receive buffers of large messages, unsent replies and TLS buffers, all connections
    # together (memlease.server.budget)
    connection_memory: int = 256 * 1024 * 1024
    request_timeout: float = 10.0
    idle_timeout: float = 300.0
    handshake_timeout: float = 5.0
    # Requests for unknown ids one connection may make in a second; 0: no limit
    max_unknown_ids_per_second: int = 1000
    max_batch: int = 10_000
    max_watches: int = 1_000_000
    expiry_batch: int = 1000
    shutdown_grace: float = 5.0
    log_level: str = "info"
    # "text": a line per record; "json": one JSON object per line, for log shippers
    log_format: str = "text"
    # Server processes under a supervisor (memlease.server.shards); 1: this process alone
    shards: int = 1
    tls_certificate: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # "HOST:PORT" (or a port alone, on loopback) to serve Prometheus metrics on; None: off
    metrics_listen: str | None = None

    def uses_tls(self, listener: Listener) -> bool:
        """Whether ``listener`` speaks TLS: its own ``tls`` if set, else whether [tls] is."""
        return listener.tls if listener.tls is not None else self.tls_certificate is not None

    def is_loopback(self) -> bool:
        """Whether ``host`` is only reachable from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# Each field: its key in the TOML file, the flag that overrides it, and its converter. Error
# messages name the one the user actually wrote.
_FIELDS: dict[str, tuple[str, str | None, Callable[[object], Any]]] = {
    "host": ("host", "--host", to_text),
    "log_level": ("log_level", "--log-level", to_log_level),
    "log_format": ("log_format", "--log-format", to_log_format),
    "shards": ("shards", "--shards", to_count),
    "listeners": ("listener", "--listen", to_listeners),
    "arena_size": ("arena.size", "--arena", to_size),
    "min_block": ("arena.min_block", None, to_size),
    "max_lease_size": ("arena.max_lease_size", None, to_optional_size),
    "max_connections": ("limits.max_connections", "--max-connections", to_count),
    "max_connections_per_client": (
        "limits.max_connections_per_client",
        "--max-connections-per-client",
        to_optional_count,
    ),
    "max_message": ("limits.max_message", "--max-message", to_size),
    "connection_memory": ("limits.connection_memory", "--connection-memory", to_size),
    "max_ttl_ms": ("limits.max_ttl", "--max-ttl", to_ms),
    "request_timeout": ("limits.request_timeout", "--request-timeout", to_seconds),
    "idle_timeout": ("limits.idle_timeout", "--idle-timeout", to_seconds),
    "handshake_timeout": (
        "limits.tls_handshake_timeout",
        "--tls-handshake-timeout",
        to_seconds,
    ),
    "max_unknown_ids_per_second": (
        "limits.max_unknown_ids_per_second",
        "--max-unknown-ids-per-second",
        to_count,
    ),
    "max_batch": ("limits.max_batch", None, to_count),
    "max_watches": ("limits.max_watches", None, to_count),
    "expiry_batch": ("limits.expiry_batch", None, to_count),
    "shutdown_grace": ("limits.shutdown_grace", None, to_seconds),
    "tls_certificate": ("tls.certificate", "--tls-cert", to_optional_path),
    "tls_key": ("tls.key", "--tls-key", to_optional_path),
    "tls_client_ca": ("tls.client_ca", "--tls-client-ca", to_optional_path),
    "metrics_listen": ("metrics.listen", "--metrics", to_optional_metrics_address),
}
FILE_KEYS = {name: key for name, (key, _, _) in _FIELDS.items()}
FLAGS = {name: flag for name, (_, flag, _) in _FIELDS.items() if flag is not None}
_CONVERTERS = {name: convert for name, (_, _, convert) in _FIELDS.items()}
_FIELD_FOR_FILE_KEY = {key: name for name, key in FILE_KEYS.items()}
_DURATION_FIELDS = (
    "max_ttl_ms",
    "request_timeout",
    "idle_timeout",
    "handshake_timeout",
    "shutdown_grace",
)


# ---------------------------------------------------------------- loading


def packaged_default_text() -> str:
    """The text of the packaged default configuration (a copy of conf/server.toml)."""
    return resources.files("memlease").joinpath("default.toml").read_text(encoding="utf-8")


def load_config(
    path: Path | str | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    registry: ProtocolRegistry | None = None,
) -> Config:
    """The validated configuration from ``path`` (None: the packaged default), with
    ``overrides`` applied on top.

    ``overrides`` maps :class:`Config` field names to values: strings as a flag takes them
    ("64MiB", "10s", ["native=7411"]) or values of the field's own type. ``registry`` names
    the protocols a listener may use (default: the installed plugins).
    Raises ConfigError with one line naming the key and the value.
    """
    if path is None:
        source = "packaged default config"
        text = packaged_default_text()
    else:
        source = f"config {path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"{source}: cannot read it: {reason}") from None
    given: dict[str, object] = {}
    values = _file_values(text, source, given)
    labels = {name: f"{source}: {FILE_KEYS[name]}" for name in values}
    for name, value in (overrides or {}).items():
        if name not in _CONVERTERS:
            raise ConfigError(f"unknown override {name!r} (known: {', '.join(_CONVERTERS)})")
        labels[name] = FLAGS.get(name, name)
        given[name] = value
        values[name] = _convert(name, value, labels[name])
    config = replace(Config(), **values)
    validate(config, registry=registry, labels=labels, given=given)
    return config


def _convert(name: str, value: object, label: str) -> Any:
    try:
        return _CONVERTERS[name](value)
    except ValueError as exc:
        raise ConfigError(f"{label} = {_show(value)}: {exc}") from None


def _show(value: object) -> str:
    if isinstance(value, tuple | list):
        return " ".join(_show(_listener_text(v) if isinstance(v, Listener) else v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def _listener_text(listener: Listener) -> str:
    return f"{listener.protocol}={listener.port}"


def _file_values(text: str, source: str, given: dict[str, object]) -> dict[str, Any]:
    try:
        document = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or a number of more digits than Python takes
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in ("arena", "limits", "tls", "metrics"):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, not {_show(value)}")
            for sub, sub_value in value.items():
                _file_value(f"{key}.{sub}", sub_value, source, values, given)
        elif key == "listener":
            values["listeners"] = _file_listeners(value, source)
        else:
            _file_value(key, value, source, values, given)
    return values


def _file_value(
    key: str, value: object, source: str, values: dict[str, Any], given: dict[str, object]
) -> None:
    name = _FIELD_FOR_FILE_KEY.get(key)
    if name is None or name == "listeners":
        known = ", ".join(k for k in FILE_KEYS.values() if k != "listener")
        raise ConfigError(f"{source}: unknown key {key} = {_show(value)} (known: {known})")
    if name in _DURATION_FIELDS and not isinstance(value, str):
        raise ConfigError(f"{source}: {key} = {_show(value)}: give a unit, e.g. '{value}s'")
    given[name] = value
    values[name] = _convert(name, value, f"{source}: {key}")


def _file_listeners(value: object, source: str) -> tuple[Listener, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: listener must be [[listener]] tables, not {_show(value)}")
    listeners = []
    for i, table in enumerate(value):
        where = f"{source}: listener[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with protocol and port")
        unknown = sorted(set(table) - {"protocol", "port", "tls"})
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]} = {_show(table[unknown[0]])} "
                "(known: protocol, port, tls)"
            )
        protocol, port, tls = table.get("protocol"), table.get("port"), table.get("tls")
        if not isinstance(protocol, str) or not protocol:
            raise ConfigError(f"{where}.protocol = {_show(protocol)}: expected a protocol name")
        if isinstance(port, bool) or not isinstance(port, int):
            raise ConfigError(f"{where}.port = {_show(port)}: expected a port number")
        if tls is not None and not isinstance(tls, bool):
            raise ConfigError(f"{where}.tls = {_show(tls)}: expected true or false")
        listeners.append(Listener(protocol, port, tls))
    return tuple(listeners)


# ---------------------------------------------------------------- validation


def validate(
    config: Config,
    *,
    registry: ProtocolRegistry | None = None,
    labels: Mapping[str, str] | None = None,
    given: Mapping[str, object] | None = None,
) -> None:
    """Check the values together. Raises ConfigError naming the key and the value.

    ``labels`` names where a field's value came from (a flag, a file's key); by default the
    file key. ``given`` holds the values as written, which errors show in place of the
    converted ones.
    """

    def label(name: str) -> str:
        return (labels or {}).get(name, FILE_KEYS[name]).rpartition(": ")[2]

    def fail(name: str, value: object, reason: str) -> ConfigError:
        where = (labels or {}).get(name, FILE_KEYS[name])
        # What the user wrote ("1000h"), not what it became ("3600000000ms").
        typed = (given or {}).get(name)
        shown = typed if isinstance(typed, str) and name != "listeners" else value
        return ConfigError(f"{where} = {_show(shown)}: {reason}")

    if not config.listeners:
        raise fail("listeners", "[]", "at least one listener is needed")
    if registry is None:
        registry = default_registry()  # the one the server then serves: loaded once
    seen: set[int] = set()
    for listener in config.listeners:
        text = _listener_text(listener)
        if listener.protocol not in registry.protocols:
            known = ", ".join(registry.names()) or "none installed"
            raise fail("listeners", text, f"unknown protocol (known: {known})")
        if not 0 <= listener.port <= 65535:
            raise fail("listeners", text, "a port is a number from 0 to 65535")
        if listener.port in seen and listener.port != 0:
            raise fail("listeners", text, "the port is used by another listener")
        seen.add(listener.port)
    if config.min_block < 8 or config.min_block & (config.min_block - 1):
        raise fail("min_block", config.min_block, "must be a power of two, at least 8 B")
    if config.arena_size < config.min_block or config.arena_size % config.min_block:
        raise fail(
            "arena_size",
            config.arena_size,
            f"must be a positive multiple of arena.min_block ({config.min_block} B)",
        )
    block = largest_block(config)
    if config.max_lease_size is not None and config.max_lease_size < 1:
        raise fail("max_lease_size", config.max_lease_size, "must be at least 1 B")
    if config.max_lease_size is not None and config.max_lease_size > block:
        raise fail(
            "max_lease_size",
            config.max_lease_size,
            f"above the arena's largest block, {format_size(block)} ({block} B): "
            f"{label('arena_size')} = {format_size(config.arena_size)} is split into "
            "power-of-two blocks and a lease takes one",
        )
    positive: dict[str, float] = {
        "max_ttl_ms": config.max_ttl_ms,
        "max_connections": config.max_connections,
        "max_message": config.max_message,
        "request_timeout": config.request_timeout,
        "idle_timeout": config.idle_timeout,
        "handshake_timeout": config.handshake_timeout,
        "expiry_batch": config.expiry_batch,
        "max_batch": config.max_batch,
        "shutdown_grace": config.shutdown_grace,
    }
    for name, value in positive.items():
        if value <= 0:
            raise fail(name, value, "must be more than zero")
    if config.max_message < MIN_MAX_MESSAGE:
        raise fail("max_message", config.max_message, "must be at least 1 KiB (1024)")
    least = least_connection_memory(config)
    if config.connection_memory < least:
        raise fail(
            "connection_memory",
            config.connection_memory,
            f"must be at least {format_size(least)} ({least} B): one message of "
            f"{label('max_message')}, one batch of replies "
            f"({ANSWER_ROOM + STREAM_SEND_ROOM} B) and "
            f"{RECEIVE_ROOM} B to read into for each of {label('max_connections')}; "
            "lower those or raise it",
        )
    room = config.max_message - REPLY_ROOM
    if config.max_lease_size is not None and config.max_lease_size > room:
        raise fail(
            "max_lease_size",
            config.max_lease_size,
            f"a get reply of it would not fit in {label('max_message')} = "
            f"{format_size(config.max_message)}; at most {room} B ({REPLY_ROOM} B less, for "
            f"headers): raise {label('max_message')} or lower {label('max_lease_size')}",
        )
    if config.max_ttl_ms > 2**31 - 1:
        # The native format carries a ttl as an int32 of milliseconds.
        raise fail("max_ttl_ms", f"{config.max_ttl_ms}ms", "must be at most 2147483647ms")
    if config.log_level not in LOG_LEVELS:
        raise fail("log_level", config.log_level, f"use one of {', '.join(LOG_LEVELS)}")
    # Here, not at the top: the worst case reads Config and largest_block from this module.
    from memlease.server.worst_case import check_memory

    if config.shards != 1:
        from memlease.server.sharding import validate_shards

        validate_shards(config, label, fail, registry)
    else:
        check_memory(config, label, fail)
    _validate_host(config, fail)
    _validate_tls(config, fail)


def per_client_limit(config: Config) -> int:
    """Connections one client (one source address) may hold at once: limits.
    max_connections_per_client, by default a quarter of limits.max_connections; 0: no limit."""
    if config.max_connections_per_client is not None:
        return config.max_connections_per_client
    return max(1, config.max_connections // PER_CLIENT_SHARE)


def largest_lease(config: Config) -> int:
    """The largest lease the server grants: arena.max_lease_size, by default the arena's
    largest block, capped so that a get reply carrying it fits in limits.max_message."""
    cap = min(largest_block(config), config.max_message - REPLY_ROOM)
    return cap if config.max_lease_size is None else min(config.max_lease_size, cap)


def largest_block(config: Config) -> int:
    """The largest block of the configured arena: the highest power of two of min_block
    units that fits in it, as memlease.core.arena.BuddyArena splits it."""
    units = config.arena_size // config.min_block
    return config.min_block << max(units.bit_length() - 1, 0)


def _validate_host(config: Config, fail: Callable[[str, object, str], ConfigError]) -> None:
    # Resolved here, so that a name that does not resolve is named as such, not as a port
    # that cannot be bound.
    try:
        socket.getaddrinfo(config.host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise fail("host", config.host, f"cannot resolve it: {exc.strerror or exc}") from None
    except (OSError, UnicodeError) as exc:
        raise fail("host", config.host, f"cannot resolve it: {exc}") from None


def _validate_tls(config: Config, fail: Callable[[str, object, str], ConfigError]) -> None:
    if (config.tls_certificate is None) != (config.tls_key is None):
        given = "tls_certificate" if config.tls_key is None else "tls_key"
        value = config.tls_certificate or config.tls_key
        raise fail(given, value, "TLS needs both tls.certificate and tls.key")
    if config.tls_certificate is None:
        if config.tls_client_ca is not None:
            raise fail("tls_client_ca", config.tls_client_ca, "needs tls.certificate and tls.key")
        for listener in config.listeners:
            if listener.tls:
                raise fail(
                    "listeners",
                    _listener_text(listener),
                    "tls = true needs [tls] certificate and key",
                )
        return
    # Loaded here so that a bad file stops `memlease serve` at once, with exit status 2.
    from memlease.tls import server_context

    server_context(config.tls_certificate, str(config.tls_key), config.tls_client_ca)


BATCH_ID_ROOM = 16
"""Bytes of a batch's reply per lease, with the widest id (uuid)."""


def batch_limit(config: Config) -> int:
    """Leases one request may name or ask for: limits.max_batch, capped so that the reply of
    a batch (an id per lease, beside the headers) fits in limits.max_message."""
    return max(1, min(config.max_batch, (config.max_message - REPLY_ROOM) // BATCH_ID_ROOM))
