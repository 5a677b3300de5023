"""The server's log: never a wait on the event loop, never a flood.

A log call on the event loop only puts the record on a bounded queue; a thread of the
standard library's ``QueueListener`` writes it out. When the sink is stuck (a pipe nobody
drains, a full journald), the queue fills and further lines are dropped and counted, never
waited for; once lines flow again, one line says how many were lost.

Repeated warnings are limited: the same message (its format, at its level) at most once per
:data:`REPEAT_INTERVAL`, and the next one that passes says how many were held back; so are
lines below WARNING that a client can cause at will (marked :data:`REPEATS`). So one
client that guesses ids or sends bad input a thousand times a second costs a line a second.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

LOGGER = "memlease"
FORMAT = "%(asctime)s memlease %(levelname)s %(message)s"

PEER = "peer"
"""Set on a record about one client (``extra={PEER: address}``): the JSON format gives it
as its own field, so a log shipper can group lines by client."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601, milliseconds), level,
    logger, message, and ``peer`` and ``exception`` where the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        peer = getattr(record, PEER, None)
        if peer is not None:
            entry["peer"] = peer
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_formatter(log_format: str, text_format: str = "") -> logging.Formatter:
    """The formatter of ``log_format`` ("text" or "json"); text lines follow
    ``text_format`` (default: the server's)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(text_format or FORMAT)


QUEUE_LINES = 10_000
"""Records waiting for the sink at most; past them, lines are dropped and counted."""

REPEAT_INTERVAL = 1.0
"""Seconds between two lines of the same message."""

STOP_WAIT = 2.0
"""Seconds a stopping server waits for its queued lines to go out: a stuck sink must not
hold up the exit."""


class LogRate:
    """Repeated log lines of one cause, at most one per ``interval`` seconds: a flood of
    refused connections or failed accepts must not flood the log too. Plain data: the caller
    passes the time."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next: dict[object, float] = {}
        self._left_out: dict[object, int] = {}

    def allow(self, cause: object, now: float) -> int | None:
        """None: leave this line of ``cause`` out (it is counted). Otherwise log it, saying
        how many lines of the cause were left out since the last one (the number returned)."""
        if now < self._next.get(cause, -float("inf")):
            self._left_out[cause] = self._left_out.get(cause, 0) + 1
            return None
        self._next[cause] = now + self.interval
        return self._left_out.pop(cause, 0)


def left_out(count: int) -> str:
    """The tail of a rate-limited line: how many like it were left out before it."""
    return f" ({count} more like it left out)" if count else ""


REPEATS = "memlease_repeats"
"""Set on a record below WARNING (``extra={REPEATS: True}``) that a client can make the
server write many times a second (a refused request), to limit it as warnings are."""


class RepeatLimit(logging.Filter):
    """A log filter: one warning (or error) per message, its format at its level, per
    ``interval`` seconds, as :class:`LogRate` allows; the next one after a pause says how
    many were left out. Records below WARNING pass, unless marked with :data:`REPEATS`."""

    def __init__(
        self, interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._rate = LogRate(interval)
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not getattr(record, REPEATS, False):
            return True
        left = self._rate.allow((record.msg, record.levelno), self._clock())
        if left is None:
            return False
        if left and not isinstance(record.args, dict):
            record.msg = f"{record.msg}%s"
            record.args = (*_as_tuple(record.args), left_out(left))
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


class _Sink:
    """Writes formatted records to a file descriptor of its own (a duplicate of stderr's),
    for the listener's thread. Not a logging.Handler on purpose: logging flushes every
    Handler at exit, and one stuck on a full pipe would hang the exit; and no Python buffer
    sits in front of the descriptor, so nothing is left for the interpreter to flush."""

    def __init__(self, fd: int, formatter: logging.Formatter) -> None:
        self._fd = os.dup(fd)
        self._format = formatter.format

    def handle(self, record: logging.LogRecord) -> None:
        data = memoryview((self._format(record) + "\n").encode("utf-8", "replace"))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # a sink that is gone loses the line: there is nowhere to say so

    def close(self) -> None:
        os.close(self._fd)


class _StreamSink:
    """Writes formatted records to a stream that has no file descriptor (a test's capture
    of stderr)."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        self._stream = stream
        self._format = formatter.format

    def handle(self, record: logging.LogRecord) -> None:
        self._stream.write(self._format(record) + "\n")
        self._stream.flush()

    def close(self) -> None:
        pass


def _sink(fd: int | None, formatter: logging.Formatter) -> _Sink | _StreamSink:
    if fd is not None:
        return _Sink(fd, formatter)
    try:
        return _Sink(sys.stderr.fileno(), formatter)
    except (AttributeError, OSError, ValueError):
        return _StreamSink(sys.stderr, formatter)


class _Listener(logging.handlers.QueueListener):
    def __init__(self, lines: queue.Queue[logging.LogRecord], sink: _Sink | _StreamSink) -> None:
        super().__init__(lines, sink)  # type: ignore[arg-type]  # it only calls handle()
        self._lines = lines

    def enqueue_sentinel(self) -> None:
        # The queue may be full of lines for a slow sink: wait for room (stop() is called
        # off the event loop, with a time limit), where the standard one would raise. The
        # standard listener's sentinel is None.
        self._lines.put(None)  # type: ignore[arg-type]


class ServerLog:
    """The "memlease" logger set up for a server, in ``log_format`` ("text" or "json");
    :meth:`stop` flushes what is queued."""

    def __init__(self, level: str, fd: int | None = None, log_format: str = "text") -> None:
        self.logger = logging.getLogger(LOGGER)
        self._sink = _sink(fd, log_formatter(log_format))
        lines: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_LINES)
        self.handler = DroppingQueueHandler(lines)
        self.handler.addFilter(RepeatLimit())
        self._listener = _Listener(lines, self._sink)
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
        give the logger back as it was. A sink still stuck then keeps the lines it holds
        (its thread is a daemon: it does not hold up the exit)."""
        flushing = threading.Thread(target=self._listener.stop, daemon=True)
        flushing.start()
        flushing.join(STOP_WAIT)
        if not flushing.is_alive():
            self._sink.close()
        level, handlers, propagate = self._saved
        self.logger.setLevel(level)
        self.logger.handlers = handlers
        self.logger.propagate = propagate
