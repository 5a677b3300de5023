"""The server's log: never a wait on the event loop, never a flood.

A log call on the event loop only puts the record on a bounded queue; a thread of the
standard library's ``QueueListener`` writes it out. When the sink is stuck (a pipe nobody
drains, a full journald), the queue fills and further lines are dropped and counted, never
waited for; once lines flow again, one line says how many were lost.

Repeated lines are limited: the same message (its format, at its level) at most once per
:data:`REPEAT_INTERVAL`, and the next one that passes says how many were held back. So one
client that guesses ids or sends bad input a thousand times a second costs a line a second.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

LOGGER = "memlease"
FORMAT = "%(asctime)s memlease %(levelname)s %(message)s"

QUEUE_LINES = 10_000
"""Records waiting for the sink at most; past them, lines are dropped and counted."""

REPEAT_INTERVAL = 1.0
"""Seconds between two lines of the same message."""

STOP_WAIT = 2.0
"""Seconds a stopping server waits for its queued lines to go out: a stuck sink must not
hold up the exit."""


class RepeatLimit(logging.Filter):
    """Lets through one record per message and level per ``interval`` seconds; the next
    one after a pause carries the count of those held back."""

    def __init__(
        self, interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        # (format, level) -> (when one last went out, how many were held back since)
        self._last: dict[tuple[object, int], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.msg, record.levelno)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.msg} ({last[1]} more like this in the last %.0fs)"
            record.args = (*_as_tuple(record.args), now - last[0])
        if len(self._last) > 4096:  # one entry per format string: a bound, not a cache
            self._last.clear()
        self._last[key] = (now, 0)
        return True


def _as_tuple(args: object) -> tuple[object, ...]:
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that never waits: with the queue full, the record is dropped and
    counted, and the count goes out with the next record that fits."""

    def __init__(self, lines: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(lines)
        self.dropped = 0
        self._unreported = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        if self._unreported:
            notice = logging.LogRecord(
                LOGGER,
                logging.WARNING,
                __file__,
                0,
                "%d log lines dropped: the log's sink did not keep up",
                (self._unreported,),
                None,
            )
            try:
                self.queue.put_nowait(notice)
                self._unreported = 0
            except queue.Full:
                pass
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._unreported += 1


class _Listener(logging.handlers.QueueListener):
    def __init__(self, lines: queue.Queue[logging.LogRecord], sink: logging.Handler) -> None:
        super().__init__(lines, sink)
        self._lines = lines

    def enqueue_sentinel(self) -> None:
        # The queue may be full of lines for a slow sink: wait for room (stop() is called
        # off the event loop, with a time limit), where the standard one would raise. The
        # standard listener's sentinel is None.
        self._lines.put(None)  # type: ignore[arg-type]


class ServerLog:
    """The "memlease" logger set up for a server; :meth:`stop` flushes what is queued."""

    def __init__(self, level: str, stream: TextIO | None = None) -> None:
        self.logger = logging.getLogger(LOGGER)
        sink = logging.StreamHandler(stream if stream is not None else sys.stderr)
        sink.setFormatter(logging.Formatter(FORMAT))
        lines: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_LINES)
        self.handler = DroppingQueueHandler(lines)
        self.handler.addFilter(RepeatLimit())
        self._listener = _Listener(lines, sink)
        self._saved = (self.logger.level, list(self.logger.handlers), self.logger.propagate)
        self.logger.handlers = [self.handler]
        self.logger.propagate = False
        self.set_level(level)
        self._listener.start()

    def set_level(self, level: str) -> None:
        """Log at ``level`` (debug, info, warning, error) from now on."""
        self.logger.setLevel(level.upper())

    @property
    def dropped(self) -> int:
        """Lines dropped so far because the sink did not keep up."""
        return self.handler.dropped

    def stop(self) -> None:
        """Write out what is queued, waiting up to :data:`STOP_WAIT` for the sink, then
        give the logger back as it was. A sink still stuck then keeps the lines it holds."""
        flushing = threading.Thread(target=self._listener.stop, daemon=True)
        flushing.start()
        flushing.join(STOP_WAIT)
        level, handlers, propagate = self._saved
        self.logger.setLevel(level)
        self.logger.handlers = handlers
        self.logger.propagate = propagate
