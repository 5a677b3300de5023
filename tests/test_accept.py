"""memlease.server.accept: connections taken with the listening socket's own accept, the peer's
address kept, TCP options from the listener, errors sorted into ignored and raised."""

from __future__ import annotations

import errno
import socket
import sys

import pytest
import trio
import trio.testing

from memlease.server import accept
from memlease.server.accept import accept_forever, close_socket, listening_socket, peer_name


async def _listening() -> socket.socket:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return listening_socket(listener)


def _connect(sock: socket.socket) -> socket.socket:
    # The handshake completes in the kernel's backlog: no accept needed for connect to return.
    return socket.create_connection(sock.getsockname()[:2])


async def _accept_all(sock: socket.socket, count: int) -> list[tuple[socket.socket, str]]:
    taken: list[tuple[socket.socket, str]] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            def accepted(connection: socket.socket, peer: str) -> None:
                taken.append((connection, peer))
                if len(taken) == count:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(accept_forever, sock, accepted)
    return taken


async def test_each_connection_comes_non_blocking_with_the_peer_address_accept_gave() -> None:
    sock = await _listening()
    clients = [_connect(sock) for _ in range(3)]
    try:
        taken = await _accept_all(sock, 3)
        expected = {f"127.0.0.1:{client.getsockname()[1]}" for client in clients}
        assert {peer for _, peer in taken} == expected
        for connection, peer in taken:
            # a whole socket.socket (TLS wraps it in trio's), of the listener's kind
            assert type(connection) is socket.socket
            assert (connection.family, connection.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert peer_name(connection.getpeername()) == peer
            assert connection.getblocking() is False
            assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            connection.close()
    finally:
        sock.close()
        for client in clients:
            client.close()


async def test_more_connections_waiting_than_one_batch_are_all_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accept, "ACCEPT_BATCH", 2)
    sock = await _listening()
    clients = [_connect(sock) for _ in range(5)]
    try:
        taken = await _accept_all(sock, 5)
        assert len(taken) == 5
        for connection, _ in taken:
            connection.close()
    finally:
        sock.close()
        for client in clients:
            client.close()


class _PlainAcceptOnly:
    """A listening socket seen through accept() and fileno() only, as on a Python whose
    sockets have no raw ``_accept``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def accept(self) -> tuple[socket.socket, object]:
        return self._sock.accept()

    def fileno(self) -> int:
        return self._sock.fileno()


async def test_without_a_raw_accept_the_socket_s_own_accept_serves() -> None:
    sock = await _listening()
    client = _connect(sock)
    try:
        taken = await _accept_all(_PlainAcceptOnly(sock), 1)  # type: ignore[arg-type]
        ((connection, peer),) = taken
        assert peer == f"127.0.0.1:{client.getsockname()[1]}"
        assert connection.getblocking() is False
        connection.close()
    finally:
        sock.close()
        client.close()


async def test_the_listener_is_taken_from_trio_non_blocking_with_the_tcp_options() -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    sock = listening_socket(listener)
    try:
        assert listener.socket.fileno() == -1  # trio no longer owns it
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == 1 << 14
    finally:
        sock.close()


class _FailingListener:
    """Stands in for a listening socket whose accept() fails with the given errnos in turn,
    then has nothing waiting (``idle`` is the socket waited on then)."""

    def __init__(self, idle: socket.socket, *errnos: int) -> None:
        self._idle = idle
        self._errnos = list(errnos)
        self.calls = 0

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        if self._errnos:
            code = self._errnos.pop(0)
            raise OSError(code, "simulated")
        raise BlockingIOError(errno.EAGAIN, "nothing waiting")

    def fileno(self) -> int:
        return self._idle.fileno()


async def test_a_connection_that_died_in_the_backlog_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    taken: list[str] = []
    idle, peer = socket.socketpair()
    with idle, peer:
        fake = _FailingListener(idle, errno.ECONNABORTED, errno.EPERM)
        with trio.move_on_after(1):  # then nothing is waiting: it waits until cancelled
            await accept_forever(fake, lambda connection, name: taken.append(name))  # type: ignore[arg-type]
    assert fake.calls == 3 and taken == []


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_running_out_of_sockets_or_memory_is_raised_for_the_caller(code: int) -> None:
    idle, peer = socket.socketpair()
    with idle, peer, pytest.raises(OSError) as raised:
        await accept_forever(_FailingListener(idle, code), lambda connection, name: None)  # type: ignore[arg-type]
    assert raised.value.errno == code
    assert code in accept.CAPACITY_ERRNOS


def test_peer_names_for_ipv4_ipv6_and_anything_else() -> None:
    assert peer_name(("127.0.0.1", 5000)) == "127.0.0.1:5000"
    assert peer_name(("::1", 5000, 0, 0)) == "[::1]:5000"
    assert peer_name("/tmp/socket") == "unknown peer"
    assert peer_name(None) == "unknown peer"


async def test_close_wakes_a_task_waiting_on_the_socket_and_may_be_repeated() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    woken: list[type[BaseException]] = []

    async def wait() -> None:
        try:
            await trio.lowlevel.wait_readable(ours)
        except trio.ClosedResourceError as exc:
            woken.append(type(exc))

    with trio.fail_after(5), theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            close_socket(ours)
        close_socket(ours)
    assert woken == [trio.ClosedResourceError]
    assert ours.fileno() == -1


@pytest.mark.skipif(sys.platform != "linux", reason="elsewhere each connection sets them")
def test_linux_copies_the_listener_s_tcp_options_to_accepted_sockets() -> None:
    # accept_forever leaves TCP_NODELAY to the listener on Linux only: pin the kernel's part.
    with socket.socket() as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as _client:
            connection, _ = listener.accept()
            with connection:
                assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
