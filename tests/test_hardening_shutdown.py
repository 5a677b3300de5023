"""SIGINT/SIGTERM: requests already sent are served, acknowledged data stays readable to the
end, a client that never reads cannot hold the exit past the grace, the exit status is 0."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
import trio
from conftest import make_config

from memlease import ConnectionFailed
from memlease.client.blocking import Client
from memlease.client.trio_client import connect
from memlease.core.messages import Data, Done, GetRequest, SetRequest
from memlease.protocol import ProtocolRegistry
from memlease.server.run import serve

Caplog = pytest.LogCaptureFixture


async def _until_logged(caplog: Caplog, text: str) -> None:
    with trio.fail_after(5):
        while not any(text in r.getMessage() for r in caplog.records):
            await trio.sleep(0)


async def test_a_request_sent_as_shutdown_begins_is_still_served(
    registry: ProtocolRegistry, caplog: Caplog
) -> None:
    caplog.set_level(logging.INFO, logger="memlease")
    config = make_config("network", arena_size=4096)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve, config, registry=registry))
        async with await connect(("127.0.0.1", listeners[0].port), "network") as client:
            lease_id = (await client.lease(16, 60_000)).lease_id
            os.kill(os.getpid(), signal.SIGTERM)
            await _until_logged(caplog, "shutting down")
            # The connection was waiting for a request when the signal came: it still gets
            # a moment to read what is on its way, so this set and get are not dropped.
            set_done, data = await client.pipeline(
                [SetRequest(lease_id, b"late"), GetRequest(lease_id)]
            )
            assert isinstance(set_done, Done) and isinstance(data, Data)
            assert data.data[:4] == b"late"
            with pytest.raises(ConnectionFailed):
                await client.stats()


async def test_a_client_that_never_reads_holds_shutdown_no_longer_than_the_grace(
    registry: ProtocolRegistry, caplog: Caplog
) -> None:
    config = make_config("native", arena_size=1 << 20, request_timeout=60.0, shutdown_grace=0.5)
    codec = registry.get("native").client_codec(1 << 21)
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[list[object]]) -> None:
        await serve(config, registry=registry, task_status=task_status)  # type: ignore[arg-type]
        stopped.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(run)
        port = listeners[0].port  # type: ignore[attr-defined]
        async with await connect(("127.0.0.1", port), registry=registry) as owner:
            lease_id = (await owner.lease(1 << 19, 60_000)).lease_id
            never_reads = await trio.open_tcp_stream("127.0.0.1", port)
            await never_reads.send_all(
                b"".join(codec.encode_request(GetRequest(lease_id)) for _ in range(64))
            )
            await trio.sleep(0.2)  # its replies fill the socket buffers
            started = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            with trio.fail_after(5):
                await stopped.wait()
            elapsed = time.monotonic() - started
            await never_reads.aclose()
    assert 0.4 < elapsed < 2.5, elapsed  # the grace, not the 60 s request timeout
    assert any("when the shutdown grace ended" in r.getMessage() for r in caplog.records)


async def test_a_message_half_received_when_shutdown_begins_has_the_whole_grace(
    registry: ProtocolRegistry, caplog: Caplog, mock_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="memlease")
    config = make_config("network", arena_size=4096, shutdown_grace=5.0)
    codec = registry.get("network").client_codec(1 << 20)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve, config, registry=registry))
        port = listeners[0].port
        async with await connect(("127.0.0.1", port), "network") as client:
            lease_id = (await client.lease(1000, 60_000)).lease_id
        message = codec.encode_request(SetRequest(lease_id, b"x" * 1000))
        sender = await trio.open_tcp_stream("127.0.0.1", port)
        await sender.send_all(message[:500])
        await trio.testing.wait_all_tasks_blocked()  # the server holds the first half
        os.kill(os.getpid(), signal.SIGTERM)
        await _until_logged(caplog, "shutting down")
        # Well past the drain for connections waiting between messages, well within the grace.
        mock_clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        await sender.send_all(message[500:])
        reply = await sender.receive_some()
        assert reply, "the server cut off a message half received when shutdown began"
        codec.feed(reply)
        assert isinstance(codec.next_reply(), Done)
        await sender.aclose()
    assert not any("shutdown grace ended" in r.getMessage() for r in caplog.records)


def _serve_in_a_subprocess() -> tuple[subprocess.Popen[str], int]:
    script = (
        "import sys; from memlease.server.config import Config;"
        "from memlease.server.config_values import Listener;"
        "from memlease.server.run import run;"
        "sys.exit(run(Config(listeners=(Listener('network', 0),), arena_size=1 << 20)))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if found := re.search(r"listening: network on 127\.0\.0\.1:(\d+)", line):
            return process, int(found.group(1))
    raise AssertionError("the server never said where it listens")


def test_sigterm_under_load_keeps_acknowledged_data_and_exits_0() -> None:
    process, port = _serve_in_a_subprocess()
    mismatches: list[str] = []
    acknowledged = [0] * 4
    started = threading.Barrier(len(acknowledged) + 1)

    def hammer(n: int) -> None:
        with Client(("127.0.0.1", port), "network", timeout=5) as client:
            lease_id = client.lease(64, 60_000).lease_id
            started.wait()
            try:
                for round_ in range(1_000_000):
                    value = f"{n}:{round_}".encode()
                    # set and get in one write: if the set is acknowledged, so is its data
                    set_done, data = client.pipeline(
                        [SetRequest(lease_id, value), GetRequest(lease_id)]
                    )
                    assert isinstance(set_done, Done)
                    acknowledged[n] += 1
                    if not isinstance(data, Data) or data.data[: len(value)] != value:
                        mismatches.append(f"client {n} round {round_}: {data!r}")
            except ConnectionFailed:
                return

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(len(acknowledged))]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    for thread in threads:
        thread.join(timeout=10)
    assert not mismatches, mismatches[:3]
    assert all(count > 0 for count in acknowledged), acknowledged
    assert process.stderr is not None
    assert "SIGTERM received" in process.stderr.read()
