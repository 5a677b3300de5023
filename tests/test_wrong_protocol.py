"""A client of one protocol at a port of another: every combination is refused on its first
reply, named ("the port at HOST:PORT speaks another protocol ... (try --protocol X)"), and
grants nothing. A plain client at a TLS port is told the port speaks TLS.

The servers run on port 0 in the test's trio run under a MockClock that stands still, so no
server time limit ends a wait: an answer comes from the bytes alone."""

from __future__ import annotations

import itertools
import uuid
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from conftest import StartServer
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli_server import Capture
from trio.testing import MockClock

import memlease
from memlease.cli.main import main
from memlease.core.errors import ProtocolError
from memlease.core.messages import (
    CasRequest,
    GetRequest,
    GetsRequest,
    IdKind,
    LeaseManyRequest,
    LeaseRequest,
    ReadRequest,
    ReleaseManyRequest,
    ReleaseRequest,
    RenewManyRequest,
    RenewRequest,
    Request,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)
from memlease.protocol import ProtocolRegistry

PROTOCOLS = ("native", "network", "uuid")
PAIRS = [(c, s) for c, s in itertools.permutations(PROTOCOLS, 2)]
ID = {"native": "5", "network": "5", "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}


@pytest.mark.parametrize(("client", "port"), PAIRS, ids=[f"{c}-at-{s}" for c, s in PAIRS])
async def test_every_command_at_a_port_of_another_protocol_is_named_and_grants_nothing(
    start_server: StartServer, mock_clock: MockClock, capsys: Capture, client: str, port: str
) -> None:
    server = await start_server(*PROTOCOLS, arena_size=64 * 1024)
    host, number = server.address(port)
    commands = [
        ["lease", "100"],
        ["lease", "1KiB", "--ttl", "1m"],
        ["stats"],
        ["get", ID[client]],
        ["set", ID[client], "data"],
        ["renew", ID[client], "--ttl", "1s"],
    ]
    for command in commands:
        # A client timeout the test would notice: the answer must come from the reply bytes.
        argv = ["--server", f"{host}:{number}", "--protocol", client, "--timeout", "20s"]
        run = partial(main, [*argv, *command], registry=server.registry)
        status = await trio.to_thread.run_sync(run)
        out, err = capsys.readouterr()
        assert (status, out) == (1, ""), (command, err)
        assert err == (
            f"memlease: the port at {host}:{number} speaks another protocol, not {client} "
            f"(try --protocol {port})\n"
        ), command
    for protocol in PROTOCOLS:
        async with await server.connect(protocol) as right:
            figures = await right.stats()
            assert (figures.granted, figures.live_leases, figures.used) == (0, 0, 0)


async def test_the_trio_client_raises_wrong_protocol(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    server = await start_server(*PROTOCOLS)
    host, port = server.address("network")
    async with await memlease.connect(
        (host, port), "uuid", registry=server.registry, timeout=20
    ) as client:
        with pytest.raises(memlease.WrongProtocol, match=r"\(try --protocol network\)"):
            await client.lease(100, 1000)
        with pytest.raises(memlease.ConnectionFailed, match="unusable"):
            await client.stats()


def _requests(kind: IdKind, lease_id: object) -> list[Request]:
    return [
        LeaseRequest(100, 1000, kind),
        GetRequest(lease_id),  # type: ignore[arg-type]
        SetRequest(lease_id, b"data"),  # type: ignore[arg-type]
        ReadRequest(lease_id, 0, 4),  # type: ignore[arg-type]
        WriteRequest(lease_id, 1, b"xy"),  # type: ignore[arg-type]
        RenewRequest(lease_id, 1000),  # type: ignore[arg-type]
        ReleaseRequest(lease_id),  # type: ignore[arg-type]
        StatRequest(lease_id),  # type: ignore[arg-type]
        StatsRequest(),
    ]


@pytest.mark.parametrize(("client", "port"), PAIRS, ids=[f"{c}-at-{s}" for c, s in PAIRS])
@settings(max_examples=30, deadline=None)
@given(int_id=st.integers(1, 2**31 - 1), uuid_id=st.uuids(), size=st.integers(1, 2**31 - 1))
def test_no_request_of_one_protocol_decodes_at_a_server_of_another(
    registry: ProtocolRegistry, client: str, port: str, int_id: int, uuid_id: uuid.UUID, size: int
) -> None:
    kind = IdKind.UUID if client == "uuid" else IdKind.INT
    lease_id = uuid_id if client == "uuid" else int_id
    encoder = registry.get(client).client_codec(1 << 20)
    requests = [
        *_requests(kind, lease_id),
        LeaseRequest(size, 60_000, kind),
        LeaseRequest(size, 60_000, kind, bound=True),
        GetsRequest(lease_id),  # type: ignore[arg-type]
        CasRequest(lease_id, 1, 0, b"data"),  # type: ignore[arg-type]
        LeaseManyRequest(3, size, 60_000, kind),
        RenewManyRequest([lease_id], 1000),  # type: ignore[list-item]
        RenewManyRequest([], 1000),
        ReleaseManyRequest([lease_id]),  # type: ignore[list-item]
        ReleaseManyRequest([]),
        WatchRequest([lease_id]),  # type: ignore[list-item]
        UnwatchRequest([]),
    ]
    for request in requests:
        server = registry.get(port).server_codec(1 << 20)
        server.feed(encoder.encode_request(request))
        with pytest.raises(ProtocolError, match=rf"it seems; this side speaks {port}|{port}:"):
            server.next_request()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certificate, key = root / "cert.pem", root / "key.pem"
    for blob in issued.cert_chain_pems:
        blob.write_to_path(certificate, append=True)
    issued.private_key_pem.write_to_path(key)
    return {"tls_certificate": str(certificate), "tls_key": str(key)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_plain_client_at_a_tls_port_is_told_to_use_tls(
    start_server: StartServer, capsys: Capture, tls_files: dict[str, str], protocol: str
) -> None:
    server = await start_server(protocol, **tls_files)
    host, port = server.address(protocol)
    argv = ["--server", f"{host}:{port}", "--protocol", protocol, "--timeout", "20s", "stats"]
    status = await trio.to_thread.run_sync(partial(main, argv, registry=server.registry))
    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err == f"memlease: the port at {host}:{port} speaks TLS (try --tls, or --ca PATH)\n"


def test_the_rule_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocols.md").read_text()
    assert "## The wrong protocol for a port" in doc


async def test_the_trio_client_is_told_a_port_speaks_tls(
    start_server: StartServer, tls_files: dict[str, str]
) -> None:
    server = await start_server("uuid", **tls_files)
    async with await server.connect("uuid", timeout=20) as plain:
        with pytest.raises(memlease.WrongProtocol, match=r"speaks TLS \(try --tls"):
            await plain.stats()
