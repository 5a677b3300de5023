"""The values of the server's configuration by kind: each converter turns a TOML value or a
flag's text into a :class:`~memlease.server.config.Config` field's type, or raises ValueError saying
what is wrong with it (memlease.server.config names the key or flag)."""

from __future__ import annotations

from dataclasses import dataclass

from memlease.units import MAX_SECONDS, parse_duration, parse_size

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")

MAX_NUMBER = 2**63 - 1
"""The largest size or count taken: what a signed 64-bit field holds (the C library, the
kernel and the wire formats all meet one sooner or later)."""


@dataclass(frozen=True)
class Listener:
    """A protocol served on a port of the configured host; ``tls``: whether it speaks TLS
    (None: whenever the config has a [tls] certificate)."""

    protocol: str
    port: int  # 0: any free port (tests)
    tls: bool | None = None


def parse_listener(text: str) -> Listener:
    """A ``PROTOCOL=PORT`` pair, as ``--listen`` takes it. Raises ValueError."""
    protocol, sep, port = text.partition("=")
    if not sep or not protocol.strip():
        raise ValueError("expected PROTOCOL=PORT, e.g. native=7411")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port {port.strip()!r} is not a number") from None
    return Listener(protocol.strip(), number)


def to_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected a byte count or a size string such as '64MiB'")
    size = parse_size(value) if isinstance(value, str) else value
    if size < 0:
        raise ValueError("a size cannot be negative")
    if size > MAX_NUMBER:
        raise ValueError(f"too large (at most {MAX_NUMBER} B)")
    return size


def to_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a duration string such as '10s'")
    if isinstance(value, str):
        return parse_duration(value)
    # Bare numbers only come from Python callers (overrides), which pass seconds.
    if value < 0:
        raise ValueError("a duration cannot be negative")
    if not value <= MAX_SECONDS:  # infinity and NaN too
        raise ValueError(f"too long (at most {MAX_SECONDS}s, about 31 years)")
    return float(value)


def to_ms(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # overrides from Python pass max_ttl_ms in milliseconds
    return round(to_seconds(value) * 1000)


def to_count(value: object) -> int:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            too_long = text.isdigit()  # more digits than Python converts
            raise ValueError("too large" if too_long else "expected a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")
    if value < 0:
        raise ValueError("cannot be negative")
    if value > MAX_NUMBER:
        raise ValueError(f"too large (at most {MAX_NUMBER})")
    return value


def to_optional_count(value: object) -> int | None:
    return None if value is None else to_count(value)


def to_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def to_log_level(value: object) -> str:
    if (level := to_text(value).lower()) not in LOG_LEVELS:
        raise ValueError(f"unknown log level (use {', '.join(LOG_LEVELS)})")
    return level


def to_log_format(value: object) -> str:
    if (log_format := to_text(value).lower()) not in LOG_FORMATS:
        raise ValueError(f"unknown log format (use {' or '.join(LOG_FORMATS)})")
    return log_format


def to_optional_size(value: object) -> int | None:
    return None if value is None else to_size(value)


def to_optional_path(value: object) -> str | None:
    return None if value is None else to_text(value)


METRICS_HOST = "127.0.0.1"
"""Where the metrics endpoint listens when ``metrics.listen`` gives a port alone."""
METRICS = "metrics"
"""The name the metrics endpoint goes by among a server's bound listeners, where the others
are named by their protocol."""


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a ``PORT`` alone (on :data:`METRICS_HOST`), as
    ``--metrics`` takes it. Raises ValueError."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host = METRICS_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets: [::1]:9100")
    if not host:
        raise ValueError("expected HOST:PORT or PORT, e.g. 127.0.0.1:9100")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port {port.strip()!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError("a port is a number from 0 to 65535")
    return host, number


def to_optional_metrics_address(value: object) -> str | None:
    if value is None:
        return None
    text = to_text(value)
    parse_metrics_address(text)
    return text


def to_listeners(value: object) -> tuple[Listener, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError("expected a list of listeners")
    listeners: list[Listener] = []
    for item in value:
        if isinstance(item, Listener):
            listeners.append(item)
        elif isinstance(item, str):
            listeners.append(parse_listener(item))
        else:
            raise ValueError(f"listener {item!r} is not PROTOCOL=PORT")
    return tuple(listeners)
