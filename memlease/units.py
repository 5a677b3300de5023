"""Sizes and durations as people write them: "64MiB", "500ms". Plain functions, no state."""

from __future__ import annotations

import re
from fractions import Fraction

_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER_WITH_UNIT = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")

MAX_SECONDS = 10**9
"""The longest duration taken, about 31 years: beyond it a duration is a typo, and a float
of seconds (or an int of milliseconds) would lose or overflow."""


def parse_size(text: str) -> int:
    """Bytes in ``text``: "4096", "32B", "512 KiB", "64MiB", "1GiB" (binary units only).

    Raises ValueError saying what is wrong; callers add the key.
    """
    match = _NUMBER_WITH_UNIT.fullmatch(text)
    if match is None:
        raise ValueError("not a size (use a byte count or B, KiB, MiB, GiB, e.g. 64MiB)")
    number, unit = match.groups()
    if unit.lower() not in _SIZE_UNITS and unit != "":
        raise ValueError(f"bad size unit {unit!r} (use B, KiB, MiB or GiB)")
    # Exact: a float would lose digits, or overflow to infinity on a long number.
    try:
        value = Fraction(number) * _SIZE_UNITS.get(unit.lower(), 1)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise ValueError("too large") from None
    if value < 0:
        raise ValueError("a size cannot be negative")
    if value.denominator != 1:
        raise ValueError("not a whole number of bytes")
    return int(value)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: "500ms", "5s", "1.5s", "2m", "1h". A unit is required, because a
    bare number is ambiguous (the original MemoryLease counted milliseconds).

    Raises ValueError saying what is wrong; callers add the key.
    """
    match = _NUMBER_WITH_UNIT.fullmatch(text)
    if match is None:
        raise ValueError("not a duration (use a number with ms, s, m or h, e.g. 500ms)")
    number, unit = match.groups()
    if unit == "":
        raise ValueError(f"a duration needs a unit: {number}ms or {number}s")
    if unit.lower() not in _DURATION_UNITS:
        raise ValueError(f"bad duration unit {unit!r} (use ms, s, m or h)")
    seconds = float(number) * _DURATION_UNITS[unit.lower()]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not seconds <= MAX_SECONDS:  # infinity too
        raise ValueError(f"too long (at most {MAX_SECONDS}s, about 31 years)")
    return seconds


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that divides it exactly, e.g. "64 MiB"."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def format_duration(ms: int) -> str:
    """``ms`` milliseconds as people read an uptime: "3d 4h 5m 6s", "2m 3s", "450ms"."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms // 1000
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size or parts:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    parts.append(f"{seconds}s")
    return " ".join(parts)
