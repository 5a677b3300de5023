"""The server fixes glibc's allocator thresholds, so that the buffers of large values are
reused instead of mapped and faulted in again per request."""

from __future__ import annotations

import subprocess
import sys

import pytest

from memlease.server.glibc_malloc import (
    MMAP_THRESHOLD_MAX,
    MMAP_THRESHOLD_MIN,
    keep_large_blocks,
    mmap_threshold,
)

# What a 512 KiB set costs in buffers: the codec's buffer grown in 64 KiB chunks, the value
# taken out of it, a reply built from the value. Minor page faults of 200 such requests.
_LARGE_VALUE_REQUESTS = """
import resource, sys
from memlease.server.glibc_malloc import keep_large_blocks
if sys.argv[1] == "tuned":
    assert keep_large_blocks(64 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    buffer = bytearray()
    for _ in range(8):
        buffer += bytes(65536)
    value = bytes(buffer)
    del buffer
    reply = value + b"x"
    del value, reply
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_VALUE_REQUESTS, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_value_buffers_are_reused_not_faulted_in_per_request() -> None:
    untuned = page_faults("default")
    tuned = page_faults("tuned")
    # 128 pages per 512 KiB buffer: untuned, glibc maps and faults in at least one per request
    assert untuned > 200 * 100
    assert tuned < 2000


def test_the_environment_s_malloc_tuning_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    assert keep_large_blocks(1 << 20) is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000")
    assert keep_large_blocks(1 << 20) is False


def test_the_mmap_threshold_holds_two_largest_messages_within_glibc_s_bounds() -> None:
    assert mmap_threshold(600 * 1024) == 1200 * 1024
    assert mmap_threshold(1024) == MMAP_THRESHOLD_MIN
    assert mmap_threshold(65540 * 1024) == MMAP_THRESHOLD_MAX
