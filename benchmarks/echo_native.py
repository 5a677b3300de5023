"""The trio ceiling: the smallest trio server that answers the native format's lease, set and
get (values in a dict, no limits, no timeouts, no arena), for ``memlease bench --server``.

    python benchmarks/echo_native.py 7499 &
    memlease bench --case one-in-flight --server 127.0.0.1:7499

Whatever memlease does beyond this costs throughput; this shows what trio itself allows on
the machine, measured in the same run as memlease.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
import sys

import trio

HEADER = struct.Struct("=iq")
ID = struct.Struct("=i")
ID_AND_LENGTH = struct.Struct("=iq")
LEASED = struct.Struct("=iqi")
DATA_SET_OK = struct.pack("=iqi", 5, 4, 0)
RECEIVE_SIZE = 65536


async def serve_one(
    stream: trio.SocketStream, values: dict[int, bytes], ids: itertools.count[int]
) -> None:
    buf = bytearray()
    start = 0
    while data := await stream.receive_some(RECEIVE_SIZE):
        buf += data
        replies = []
        while len(buf) - start >= 12:
            kind, size = HEADER.unpack_from(buf, start)
            end = start + 12 + size
            if len(buf) < end:
                break
            if kind == 1:  # lease
                lease_id = next(ids)
                values[lease_id] = b""
                replies.append(LEASED.pack(2, 4, lease_id))
            elif kind == 3:  # set
                lease_id, _ = ID_AND_LENGTH.unpack_from(buf, start + 12)
                values[lease_id] = bytes(buf[start + 24 : end])
                replies.append(DATA_SET_OK)
            elif kind == 4:  # get
                (lease_id,) = ID.unpack_from(buf, start + 12)
                value = values.get(lease_id, b"")
                replies.append(ID_AND_LENGTH.pack(lease_id, len(value)))
                replies[-1] = HEADER.pack(4, 12 + len(value)) + replies[-1] + value
            else:
                return
            start = end
        del buf[:start]
        start = 0
        if replies:
            await stream.send_all(b"".join(replies))


async def main(port: int) -> None:
    values: dict[int, bytes] = {}
    ids = itertools.count(1)

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await serve_one(stream, values, ids)

    await trio.serve_tcp(handler, port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 7499)
