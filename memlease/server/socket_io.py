"""Byte I/O for a connection's hot loop: one system call per receive and per send on a plain
TCP stream, the stream's own methods on any other (TLS, memory streams in tests).

``trio.SocketStream`` spends more time in its layers (conflict detection, generator context
managers, a scheduler pass after every successful call) than in the system calls; the loop
needs none of that. Here a receive reads into a scratch buffer and yields to the scheduler at
most once per call, and a send is first tried without waiting: most replies fit the socket
buffer, so they go out at once and no deadline has to be set for them. Only what the socket
did not take is copied (the parts may be views of memory that can change once we wait) and
sent a piece at a time with :meth:`StreamIO.send_some`, each piece a cancellation point and
each a sign of progress that the caller's send bound counts from.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import termios
from collections.abc import Sequence

import trio
from trio.lowlevel import checkpoint, checkpoint_if_cancelled, wait_readable, wait_writable

from memlease.server.budget import STREAM_PIECE, STREAM_SEND_ROOM

Bytes = bytes | bytearray | memoryview

_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16

_CLOSED = frozenset({errno.EBADF, errno.ENOTSOCK})
# SIOCOUTQ (Linux's TIOCOUTQ on a TCP socket): bytes the peer has not acknowledged yet.
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
_INT_ZERO = bytes(4)


class StreamIO:
    """Receive and send on any trio stream through its own methods."""

    __slots__ = ("_receive_size", "_stream")

    send_buffers = STREAM_SEND_ROOM
    """What the stream itself may hold of a blocked send beyond the bytes left to send: a
    TLS stream keeps the piece it is given, encrypted, until the peer takes it."""

    def __init__(self, stream: trio.abc.Stream, receive_size: int) -> None:
        self._stream = stream
        self._receive_size = receive_size

    async def receive(self) -> Bytes:
        """The next bytes from the peer; empty once it closed its end. The result is valid
        until the next receive of any connection sharing the scratch buffer: use it (or copy
        it) before the next await."""
        return await self._stream.receive_some(self._receive_size)

    async def receive_into(self, view: memoryview) -> int:
        """Read at most ``len(view)`` bytes from the peer into ``view`` (which must not be
        empty); how many, 0 once it closed its end."""
        # Not len(view): a TLS stream allocates what it is asked for on every read, and a
        # large message's view can be max_message long.
        data = await self._stream.receive_some(min(len(view), self._receive_size))
        received = len(data)
        view[:received] = data
        return received

    def send_now(self, parts: Sequence[Bytes]) -> Bytes | None:
        """Send what can be sent of ``parts`` without waiting; what is left (a copy), or None
        when all of it went."""
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        # a view (of a lease's block) could change while send_all waits
        return b"".join(parts)

    async def send_some(self, data: Bytes, until: float) -> int:
        """Send the front of ``data`` (what :meth:`send_now` left), waiting until the peer
        takes some, but not past ``until``: how many bytes went, 0 if none by then. Call
        again with the rest."""
        # A stream's send_all takes all or breaks; in pieces, each one counts as progress.
        # One cut short leaves the stream unusable: the caller ends the connection on a 0.
        piece = data[:STREAM_PIECE]
        with trio.move_on_at(until):
            await self._stream.send_all(piece)
            return len(piece)
        return 0

    def unacknowledged(self) -> int | None:
        """Bytes sent that the peer has not yet acknowledged, if the stream can tell."""
        return None


class SocketIO(StreamIO):
    """Receive and send with system calls on a connected non-blocking socket (a plain one,
    or a trio socket such as a trio.SocketStream's), which the caller closes.

    ``scratch`` may be shared by every connection of a server: what :meth:`receive` returns
    is read into it and must be consumed before the caller's next await.
    """

    send_buffers = 0
    """A socket's buffers are the kernel's, not the process's."""

    __slots__ = (
        "_fd",
        "_scratch",
        "_size",
        "_socket",
        "_view",
        "_wait_first",
        "_yield_next",
    )

    # No StreamIO.__init__: there is no stream, and every method that would use it is
    # overridden here.
    def __init__(self, sock: socket.socket | trio.socket.SocketType, scratch: bytearray) -> None:
        self._socket = sock
        self._fd = sock.fileno()
        self._scratch = [scratch]
        self._view = memoryview(scratch)
        self._size = len(scratch)
        # A new connection's first request is usually in already.
        self._wait_first = False
        self._yield_next = False

    async def receive(self) -> Bytes:
        received = await self._read(self._scratch, self._size)
        return self._view[:received]

    async def receive_into(self, view: memoryview) -> int:
        size = len(view)
        if not size:
            raise ValueError("receive_into needs room for at least one byte")
        return await self._read([view], size)

    async def _read(self, buffers: list[bytearray] | list[memoryview], size: int) -> int:
        # A peer that waits for each reply (or closes after it) has sent nothing more when we
        # come back: after a read that did not fill the buffer, wait first rather than pay
        # for a read that fails. A read that needed no wait yields before the next one, so
        # that a peer that keeps the socket full cannot starve other connections; the yield
        # comes before the read, never between it and the caller's use of the scratch buffer.
        fd = self._fd
        if not self._wait_first:
            if self._yield_next:
                await checkpoint()
            else:
                await checkpoint_if_cancelled()
            try:
                received = os.readv(fd, buffers)
                self._yield_next = True
                self._wait_first = received < size
                return received
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _broken(exc) from exc
        while True:  # wait_readable is a cancellation point
            await wait_readable(self._socket)
            try:
                received = os.readv(fd, buffers)
                break
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _broken(exc) from exc
        self._yield_next = False
        self._wait_first = received < size
        return received

    def send_now(self, parts: Sequence[Bytes]) -> Bytes | None:
        count = len(parts)
        try:
            if count == 1:
                data = parts[0]
                sent = os.write(self._fd, data)
                if sent == len(data):
                    return None
                # bytes cannot change while we wait: only other buffers need copying
                return memoryview(data)[sent:] if type(data) is bytes else bytes(data[sent:])
            if count <= _IOV_MAX:
                sent = os.writev(self._fd, parts)
                total = sum(map(len, parts))
                if sent == total:
                    return None
                return memoryview(b"".join(parts))[sent:]
            joined = b"".join(parts)
            sent = os.write(self._fd, joined)
            return None if sent == len(joined) else memoryview(joined)[sent:]
        except BlockingIOError:
            return b"".join(parts) if count > 1 else bytes(parts[0])
        except OSError as exc:
            raise _broken(exc) from exc

    async def send_some(self, data: Bytes, until: float) -> int:
        fd = self._fd
        while True:
            with trio.move_on_at(until) as waiting:
                await wait_writable(self._socket)
            if waiting.cancelled_caught:
                return 0  # nothing is half sent: the wait comes before the write
            try:
                return os.write(fd, data)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _broken(exc) from exc

    def unacknowledged(self) -> int | None:
        if _OUTQ is None:
            return None
        try:
            queued = fcntl.ioctl(self._fd, _OUTQ, _INT_ZERO)
        except OSError:
            return None
        return int.from_bytes(queued, sys.byteorder, signed=True)


def _broken(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED:
        return trio.ClosedResourceError("the connection was closed")
    return trio.BrokenResourceError(f"socket error: {exc}")


def stream_io(stream: trio.abc.Stream, scratch: bytearray) -> StreamIO:
    """System-call I/O for a plain TCP stream; the stream's own methods for anything else."""
    if type(stream) is trio.SocketStream:
        return SocketIO(stream.socket, scratch)
    return StreamIO(stream, len(scratch))
