"""Sizes and durations as people write them: "64MiB", "500ms". Plain functions, no state."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER_WITH_UNIT = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


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
    value = float(number) * _SIZE_UNITS.get(unit.lower(), 1)
    if value < 0:
        raise ValueError("a size cannot be negative")
    if value != math.floor(value):
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
    return seconds


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that divides it exactly, e.g. "64 MiB"."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"
