"""``--log-format json``: one JSON object per line, with the client's address where a line is
about one; ``text`` stays the default."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from collections.abc import Iterator

import pytest
from server_processes import ServerProcess

from memlease.client.blocking import Client
from memlease.core.errors import LeaseNotFound
from memlease.server.logs import PEER, JsonFormatter


def test_a_record_becomes_one_json_line_with_its_peer() -> None:
    message, args = "%s: bad %s input\nclosing", ("1.2.3.4:5", "uuid")
    record = logging.LogRecord("memlease", logging.WARNING, __file__, 1, message, args, None)
    setattr(record, PEER, "1.2.3.4:5")
    record.created = 0.25
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "1970-01-01T00:00:00.250+00:00",
        "level": "WARNING",
        "logger": "memlease",
        "message": "1.2.3.4:5: bad uuid input\nclosing",
        "peer": "1.2.3.4:5",
    }


def test_a_record_about_no_client_has_no_peer_and_keeps_its_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "memlease", logging.ERROR, __file__, 1, "oops", (), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert "peer" not in entry
    assert entry["exception"].endswith("ValueError: boom")


@pytest.fixture
def json_server() -> Iterator[ServerProcess]:
    server = ServerProcess(
        "network", extra=("--log-format", "json", "--log-level", "debug")
    ).start()
    try:
        yield server
    finally:
        server.close()


def test_serve_with_log_format_json_writes_only_json_lines(json_server: ServerProcess) -> None:
    with (
        Client(("127.0.0.1", json_server.port), "network", timeout=5.0) as client,
        pytest.raises(LeaseNotFound),
    ):
        client.get(12345)
    assert json_server.proc is not None
    json_server.proc.send_signal(signal.SIGTERM)
    assert json_server.proc.wait(10) == 0
    lines = json_server.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, or this raises
    assert all(
        set(entry) >= {"time", "level", "logger", "message"} and entry["logger"] == "memlease"
        for entry in entries
    ), entries
    assert any(e["message"].startswith("listening: network on 127.0.0.1:") for e in entries)
    opened = [e for e in entries if "network connection opened" in e["message"]]
    assert len(opened) == 1 and re.fullmatch(r"127\.0\.0\.1:\d+", opened[0]["peer"]), entries
    client_address = opened[0]["peer"]
    miss = [e for e in entries if "refused (NOT_FOUND)" in e["message"]]
    assert len(miss) == 1 and miss[0]["level"] == "DEBUG", entries
    assert miss[0]["peer"] == client_address
    assert any(
        e.get("peer") == client_address and "connection closed" in e["message"] for e in entries
    ), entries


def test_an_unknown_log_format_is_a_usage_error() -> None:
    from memlease.cli.main import main

    assert main(["serve", "--log-format", "xml", "--listen", "network=0"]) == 2
