"""A session: one connection's part in the lease table, sans-IO.

The leases bound to it (released when it ends) and the leases it watches (a notice when each
ends) are kept by slot number on both sides, the table's and the session's, so that ending a
lease or a session each touch only what they hold. ``notify`` is where notices go: the
server's shell sets it to push the notice on the connection.
"""

from __future__ import annotations

from collections.abc import Callable

from memlease.core.messages import Notice


def _ignore(notice: Notice) -> None:
    """Where the notices of a session nobody reads go."""


class Session:
    """One connection's bound and watched leases, and where its notices go."""

    __slots__ = ("bound", "notify", "watching")

    def __init__(self, notify: Callable[[Notice], None] = _ignore) -> None:
        self.notify = notify
        self.bound: set[int] = set()
        """The slots of the live leases bound to this session."""
        self.watching: set[int] = set()
        """The slots of the live leases this session watches."""
