"""The server-stats fields every built-in format carries alike: memlease's release as three
numbers, the per-op request counts as a run of 8-byte counts, and the figures after them.

The layouts declare them (``version_major``, ``version_minor``, ``version_patch``, and
``requests``, a length-prefixed run of bytes; then the "more" figures); these turn them into
ServerStats' fields and back, in the format's byte order.

Figures added to stats go after the counts, after those already there: a client reads the
figures it knows and passes over any that follow (a newer server's), and one talking to a
server that sends none of the "more" figures (a release before them) reads them as 0.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from memlease.core.errors import ProtocolError
from memlease.core.messages import ServerStats

MAX_COUNTS = 1024
"""Request counts a stats reply may carry: many more ops than any release has."""

_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def version_numbers(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a ``major.minor.patch`` version; a pre-release or local
    suffix (``0.2.0rc1``) is not carried. ProtocolError for a version without them."""
    found = _RELEASE.match(version)
    if found is None:
        raise ProtocolError(f"version {version!r} is not major.minor.patch")
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch)


def version_text(major: int, minor: int, patch: int) -> str:
    """The version as ``major.minor.patch``."""
    return f"{major}.{minor}.{patch}"


def pack_counts(order: str, counts: Sequence[int]) -> bytes:
    """``counts`` as 8-byte integers end to end (``order``: ``=`` signed native, ``>``
    unsigned network)."""
    code = "q" if order == "=" else "Q"
    return struct.pack(f"{order}{len(counts)}{code}", *counts)


def unpack_counts(order: str, buf: bytearray, at: int, room: int) -> tuple[int, ...]:
    """The counts in the ``room`` bytes at ``at``."""
    if room < 0 or room % 8 or room > 8 * MAX_COUNTS:
        raise ProtocolError(
            f"stats carries {room} bytes of request counts: not a whole number of 8-byte "
            f"counts, negative, or more than {MAX_COUNTS}"
        )
    code = "q" if order == "=" else "Q"
    return struct.unpack_from(f"{order}{room // 8}{code}", buf, at)


def stats_values(s: ServerStats) -> tuple[int | float, ...]:
    """The fixed fields of a stats reply, in layout order, up to (without) the counts'
    length."""
    return (
        *(s.arena_size, s.used, s.free, s.largest_free, s.internal_fragmentation),
        s.external_fragmentation,
        *(s.live_leases, s.granted, s.expired, s.released, s.refused, s.connections),
        *(s.closed_for_guessing, s.uptime_ms, *version_numbers(s.version), s.hits, s.misses),
    )


def more_stats_values(s: ServerStats) -> tuple[int, ...]:
    """The figures after the counts, in layout order."""
    return s.expiry_lag_us, s.expiry_behind_us


def decode_stats(
    order: str, fixed: struct.Struct, more: struct.Struct, buf: bytearray, at: int, length: int
) -> ServerStats:
    """The ServerStats in the ``length`` bytes at ``at``: ``fixed`` unpacks the fixed fields
    and the counts' length, the counts follow, then ``more``'s figures (all of them, or none
    from a server before them), then maybe figures this release does not know."""
    values = fixed.unpack_from(buf, at)
    room = length - fixed.size
    counted = values[-1]
    if counted > room:
        raise ProtocolError(
            f"stats claims {counted} bytes of request counts but its frame carries {room}"
        )
    counts = unpack_counts(order, buf, at + fixed.size, counted)
    after = room - counted
    if after >= more.size:
        lag_us, behind_us = more.unpack_from(buf, at + fixed.size + counted)
    elif after == 0:
        lag_us = behind_us = 0  # a server before these figures
    else:
        raise ProtocolError(
            f"stats carries {after} bytes after its request counts: fewer than the "
            f"{more.size} of its expiry figures"
        )
    (size, used, free, largest, internal, external, live, granted, expired, released) = values[:10]
    refused, connections, guessing, uptime, major, minor, patch, hits, misses = values[10:19]
    return ServerStats(
        *(size, used, free, largest, internal, external, live, granted, expired, released),
        *(refused, connections, guessing, uptime, version_text(major, minor, patch)),
        *(hits, misses, counts, lag_us, behind_us),
    )
