"""The server's log never waits on a stuck sink and never floods: memlease/server/logs.py."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading

from memlease.server.logs import QUEUE_LINES, DroppingQueueHandler, RepeatLimit, ServerLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("memlease", level, __file__, 1, msg, args, None)


def test_the_same_message_goes_out_once_a_second_with_a_count_of_the_rest() -> None:
    clock = _Clock()
    limit = RepeatLimit(1.0, clock)
    passed = [limit.filter(_record("%s: bad input", f"peer{i}")) for i in range(5)]
    assert passed == [True, False, False, False, False]
    clock.now += 1.0
    later = _record("%s: bad input", "peer9")
    assert limit.filter(later)
    assert later.getMessage() == "peer9: bad input (4 more like it left out)"


def test_lines_below_warning_pass_unless_a_client_can_repeat_them() -> None:
    limit = RepeatLimit(1.0, _Clock())
    info = [_record("%s received", name, level=logging.INFO) for name in ("A", "B")]
    assert all(limit.filter(record) for record in info)
    refusals = [_record("%s refused", n, level=logging.INFO) for n in range(3)]
    for record in refusals:
        record.memlease_repeats = True
    assert [limit.filter(record) for record in refusals] == [True, False, False]


def test_other_messages_and_levels_are_limited_apart() -> None:
    limit = RepeatLimit(1.0, _Clock())
    assert limit.filter(_record("one %s", 1))
    assert limit.filter(_record("two %s", 1))
    assert limit.filter(_record("one %s", 1, level=logging.ERROR))
    assert not limit.filter(_record("one %s", 2))


def test_a_stuck_sink_drops_lines_and_counts_them_instead_of_waiting() -> None:
    read_end, write_end = os.pipe()  # nobody ever reads: the sink blocks once the pipe is full
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # 64 KiB, as on 4 KiB-page Linux: the count below
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 16)
    log = ServerLog("info", fd=write_end)
    # The pipe holds 64 KiB, at most 2,850 of these lines (23 B each, before any prefix):
    # 10,000 more than the queue holds is far more than fits in both.
    lines = QUEUE_LINES + 10_000
    finished = threading.Event()

    def flood() -> None:
        for i in range(lines):
            log.logger.error("distinct line number %d" % i)  # noqa: UP031 - not one repeat
        finished.set()

    worker = threading.Thread(target=flood, daemon=True)
    worker.start()
    assert finished.wait(60), "logging blocked on a stuck sink"
    assert log.dropped > 0

    def drain() -> None:  # the sink comes unstuck: what was queued goes out
        while os.read(read_end, 1 << 16):
            pass

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    log.stop()
    os.close(write_end)  # the log's own copy was closed by stop()
    drainer.join(10)
    os.close(read_end)


def test_the_drop_count_is_reported_once_lines_fit_again() -> None:
    lines: queue.Queue[logging.LogRecord] = queue.Queue(2)
    handler = DroppingQueueHandler(lines)
    for i in range(5):
        handler.enqueue(_record("n %d", i))
    assert handler.dropped == 3
    lines.get_nowait()
    lines.get_nowait()
    handler.enqueue(_record("after"))
    notice = lines.get_nowait()
    assert notice.getMessage() == "3 log lines dropped: the log's sink did not keep up"
    assert lines.get_nowait().getMessage() == "after"
