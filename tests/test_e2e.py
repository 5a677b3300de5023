"""End to end: many concurrent pipelining clients, and the original client's captured bytes
sent the original's way (one connection per request) to a real server."""

from __future__ import annotations

import struct
from pathlib import Path

import trio
from conftest import RunningServer, StartServer

from memlease.core.messages import GetRequest, Request, SetRequest

CLIENTS = 200
OPERATIONS = 100
LEASE_SIZE = 64


async def test_concurrent_clients_pipelining_every_get_checked(
    server: RunningServer, protocol: str
) -> None:
    checked = 0

    async def one_client(number: int) -> None:
        nonlocal checked
        async with await server.connect(protocol) as client:
            lease_id = (await client.lease(LEASE_SIZE, 60_000)).lease_id
            payloads = [f"client {number:03d} op {op:03d}".encode() for op in range(OPERATIONS)]
            requests: list[Request] = []
            for payload in payloads[1 : OPERATIONS // 2]:
                requests += [SetRequest(lease_id, payload), GetRequest(lease_id)]
            requests.append(GetRequest(lease_id))
            assert len(requests) + 1 == OPERATIONS
            replies = await client.pipeline(requests)
            written = b""
            for request, reply in zip(requests, replies, strict=True):
                if isinstance(request, GetRequest):
                    data = getattr(reply, "data", None)
                    assert data == written + bytes(LEASE_SIZE - len(written)), reply
                    checked += 1
                elif isinstance(request, SetRequest):
                    assert type(reply).__name__ == "Done", reply
                    written = request.data

    async with trio.open_nursery() as nursery:
        for number in range(CLIENTS):
            nursery.start_soon(one_client, number)
    assert checked == CLIENTS * OPERATIONS // 2


# ---------------------------------------------------------------- the original client's bytes

VECTORS = Path(__file__).parent / "vectors" / "native"
HEADER = struct.Struct("<iq")
CAPTURED_ID = 0x1DB38383
ID = struct.Struct("<i")


def _vector(name: str) -> tuple[bytes, bytes]:
    return (VECTORS / f"{name}.req.bin").read_bytes(), (VECTORS / f"{name}.resp.bin").read_bytes()


def _with_id(message: bytes, lease_id: int) -> bytes:
    """``message`` with the captured lease id replaced: ids are random on every server."""
    (found,) = ID.unpack_from(message, HEADER.size)
    assert found == CAPTURED_ID, "the id sits right after the header in these messages"
    return message[: HEADER.size] + ID.pack(lease_id) + message[HEADER.size + ID.size :]


async def _exchange_once(server: RunningServer, request: bytes) -> bytes:
    """As the original client: connect, send one message, read one reply, close."""
    async with await server.open_socket("native") as stream:
        await stream.send_all(request)
        reply = b""
        while len(reply) < HEADER.size or len(reply) < HEADER.size + HEADER.unpack_from(reply)[1]:
            chunk = await stream.receive_some()
            assert chunk, f"the server closed after {len(reply)} bytes of a reply"
            reply += chunk
        return reply


def _fields(reply: bytes) -> tuple[int, int, bytes]:
    kind, size = HEADER.unpack_from(reply)
    payload = reply[HEADER.size :]
    assert len(payload) == size, f"frame says {size} payload bytes, {len(payload)} came"
    return kind, size, payload


async def test_the_captured_original_exchanges(start_server: StartServer) -> None:
    # the captured server had a 4096-byte arena (vector 06 is refused for no room)
    server = await start_server("native", arena_size=4096)

    request, expected = _vector("01_lease_ok")
    reply = await _exchange_once(server, request)
    kind, size, payload = _fields(reply)
    assert (kind, size) == _fields(expected)[:2] == (2, 4)
    (granted,) = ID.unpack(payload)
    assert 0 < granted < 2**31

    for name in ("02_set_ok", "03_get_ok"):
        request, expected = _vector(name)
        reply = await _exchange_once(server, _with_id(request, granted))
        expected = _with_id(expected, granted) if name == "03_get_ok" else expected
        assert _fields(reply)[:2] == _fields(expected)[:2], name
        assert reply == expected, name
    get_payload = _fields(reply)[2]
    lease_id, n = struct.unpack_from("<iq", get_payload)
    assert (lease_id, n) == (granted, 100)
    assert get_payload[12:] == b"hello\0" + bytes(94)

    for name in ("04_get_unknown", "05_set_unknown", "06_lease_too_big"):
        request, expected = _vector(name)
        reply = await _exchange_once(server, request)
        assert _fields(reply) == _fields(expected), name
