"""Keep the C allocator from handing large blocks back to the kernel after every message.

A 512 KiB value passes through several buffers of its size per request (the codec's receive
buffer, the decoded value, the reply). glibc serves blocks above its mmap threshold (128 KiB
at first, raised as such blocks are freed) from fresh mappings, and trims the heap top once
that much is free, so depending on what the process allocated first, every one of those
buffers could be mapped and faulted in again per request: about 145 page faults and twice the
CPU time per large-values op (bench, 2 x 512 KiB), against none once the thresholds are
fixed. Fixed thresholds also switch off glibc's dynamic adjustment, so a server behaves the
same whatever it happened to allocate first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("memlease")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20
"""glibc refuses an mmap threshold above this on 64-bit systems."""
MMAP_THRESHOLD_MIN = 1 << 20


def mmap_threshold(max_message: int) -> int:
    """Blocks below this come from the heap: room for a few buffers of the largest message,
    within glibc's bounds."""
    return min(MMAP_THRESHOLD_MAX, max(MMAP_THRESHOLD_MIN, 2 * max_message))


def keep_large_blocks(max_message: int) -> bool:
    """Fix glibc's mmap and trim thresholds for messages up to ``max_message`` bytes (the heap
    may keep up to twice the mmap threshold free). Whether they were set: not on another C
    library or platform, nor when the user tunes malloc through the environment."""
    if not sys.platform.startswith("linux"):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") for name in os.environ
    ):
        log.debug("allocator: tuned through the environment; thresholds left as they are")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = mmap_threshold(max_message)
    # mallopt returns 1 on success; musl's stub returns 0
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
        return False
    if mallopt(_M_TRIM_THRESHOLD, 2 * threshold) != 1:
        return False
    log.debug("allocator: mmap threshold %d B, trim threshold %d B", threshold, 2 * threshold)
    return True
