"""TLS on the server's listeners and in both clients and the CLI, with certificates from
trustme: per listener, mutual TLS, refusals that name the cause, a stalled handshake."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from conftest import PROTOCOLS, StartServer

from memlease import ConnectionFailed
from memlease.cli.main import main
from memlease.core.errors import ConfigError
from memlease.core.messages import EndReason, Notice
from memlease.protocol import ProtocolRegistry
from memlease.server.config import Config, load_config
from memlease.server.config_values import Listener
from memlease.tls import client_context, server_context

Caplog = pytest.LogCaptureFixture


@dataclass(frozen=True)
class Pki:
    ca: Path  # trusted for the server
    certificate: Path
    key: Path
    client_ca: Path  # signs the clients' certificates
    client_certificate: Path
    client_key: Path
    stranger_ca: Path  # signs nothing anyone uses

    def server_fields(self, *, mutual: bool = False) -> dict[str, str]:
        fields = {"tls_certificate": str(self.certificate), "tls_key": str(self.key)}
        if mutual:
            fields["tls_client_ca"] = str(self.client_ca)
        return fields


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, client_ca, stranger = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = client_ca.issue_cert("client.example")
    paths = {name: root / f"{name}.pem" for name in Pki.__dataclass_fields__}
    ca.cert_pem.write_to_path(paths["ca"])
    for blob in server.cert_chain_pems:
        blob.write_to_path(paths["certificate"], append=True)
    server.private_key_pem.write_to_path(paths["key"])
    client_ca.cert_pem.write_to_path(paths["client_ca"])
    for blob in client.cert_chain_pems:
        blob.write_to_path(paths["client_certificate"], append=True)
    client.private_key_pem.write_to_path(paths["client_key"])
    stranger.cert_pem.write_to_path(paths["stranger_ca"])
    return Pki(**paths)


async def test_every_protocol_over_tls_with_both_clients(
    start_server: StartServer, pki: Pki
) -> None:
    server = await start_server(**pki.server_fields())
    assert all(bound.tls for bound in server.listeners)
    context = client_context(pki.ca)
    for protocol in PROTOCOLS:
        async with await server.connect(protocol, ssl_context=context) as client:
            lease_id = (await client.lease(64, 60_000)).lease_id
            await client.set(lease_id, b"over tls")
            assert (await client.get(lease_id))[:8] == b"over tls"

        def blocking(protocol: str = protocol, lease_id: object = lease_id) -> bytes:
            with server.client(protocol, ssl_context=context) as client:
                return client.get(lease_id)  # type: ignore[arg-type]

        assert (await trio.to_thread.run_sync(blocking))[:8] == b"over tls"


async def test_notices_over_tls_while_calls_go_on_from_another_task(
    start_server: StartServer, pki: Pki
) -> None:
    server = await start_server("network", **pki.server_fields())
    context = client_context(pki.ca)
    async with await server.connect("network", ssl_context=context) as client:
        a, b = (g.lease_id for g in await client.lease_many(2, 32, 60_000))
        await client.watch([a, b])
        heard: list[Notice] = []

        async def listen() -> None:
            async for notice in client.notices():
                heard.append(notice)
                if len(heard) == 2:
                    return

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await trio.sleep(0.05)  # the listener waits in a TLS receive: a call cancels it
                assert (await client.stats()).live_leases == 2
                await client.release(a)
                await client.release(b)
        assert heard == [Notice(a, EndReason.RELEASED), Notice(b, EndReason.RELEASED)]


async def test_a_plain_client_on_a_tls_port_is_refused_and_nobody_else_suffers(
    start_server: StartServer, pki: Pki, caplog: Caplog
) -> None:
    server = await start_server("network", **pki.server_fields())
    async with await server.connect("network", ssl_context=client_context(pki.ca)) as good:
        lease_id = (await good.lease(16, 60_000)).lease_id
        await good.set(lease_id, b"kept")
        async with await server.connect("network", timeout=2) as plain:
            with pytest.raises(ConnectionFailed):
                await plain.stats()
        assert (await good.get(lease_id))[:4] == b"kept"
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)


async def test_a_server_certificate_from_an_unknown_ca_is_refused_by_both_clients(
    start_server: StartServer, pki: Pki
) -> None:
    server = await start_server("uuid", **pki.server_fields())
    wrong = client_context(pki.stranger_ca)
    with pytest.raises(ConnectionFailed, match=r"not trusted.*--ca"):
        await server.connect("uuid", ssl_context=wrong)

    def blocking() -> None:
        server.client("uuid", ssl_context=wrong)

    with pytest.raises(ConnectionFailed, match=r"not trusted.*--ca"):
        await trio.to_thread.run_sync(blocking)


async def test_mutual_tls_lets_in_only_clients_with_a_certificate_from_the_client_ca(
    start_server: StartServer, pki: Pki
) -> None:
    server = await start_server("native", **pki.server_fields(mutual=True))
    anonymous = client_context(pki.ca)
    with pytest.raises(ConnectionFailed):
        async with await server.connect("native", ssl_context=anonymous, timeout=2) as client:
            await client.stats()  # TLS 1.3: the server's refusal comes with the first read
    known = client_context(pki.ca, pki.client_certificate, pki.client_key)
    async with await server.connect("native", ssl_context=known) as client:
        assert (await client.stats()).connections == 1


async def test_tls_per_listener_a_listener_may_stay_plain(
    start_server: StartServer, pki: Pki, registry: ProtocolRegistry
) -> None:
    config_file = pki.ca.parent / "mixed.toml"
    config_file.write_text(
        f"""
[[listener]]
protocol = "native"
port = 0
tls = false

[[listener]]
protocol = "uuid"
port = 0

[tls]
certificate = "{pki.certificate}"
key = "{pki.key}"
"""
    )
    config = load_config(config_file, registry=registry)
    assert [config.uses_tls(listener) for listener in config.listeners] == [False, True]
    server = await start_server("native", "uuid", listeners=config.listeners, **pki.server_fields())
    assert {bound.protocol: bound.tls for bound in server.listeners} == {
        "native": False,
        "uuid": True,
    }
    async with await server.connect("native") as plain:
        await plain.stats()
    async with await server.connect("uuid", ssl_context=client_context(pki.ca)) as secure:
        await secure.stats()


async def test_a_stalled_handshake_is_cut_off_and_does_not_block_accepting(
    start_server: StartServer, pki: Pki, autojump_clock: trio.testing.MockClock, caplog: Caplog
) -> None:
    server = await start_server("network", handshake_timeout=3.0, **pki.server_fields())
    async with await server.open_socket("network") as silent:
        started = trio.current_time()
        async with await server.connect("network", ssl_context=client_context(pki.ca)) as other:
            assert (await other.stats()).connections == 2
        assert await silent.receive_some() == b""
        assert trio.current_time() - started == pytest.approx(3.0)
    assert any("handshake not done within 3s" in r.getMessage() for r in caplog.records)


def test_tls_config_mistakes_are_one_line_config_errors(
    pki: Pki, registry: ProtocolRegistry, tmp_path: Path
) -> None:
    def load(**overrides: object) -> Config:
        return load_config(None, overrides, registry=registry)

    with pytest.raises(ConfigError, match=r"needs both tls\.certificate and tls\.key"):
        load(tls_certificate=str(pki.certificate))
    with pytest.raises(ConfigError, match=r"client_ca.*needs tls\.certificate"):
        load(tls_client_ca=str(pki.client_ca))
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tls_certificate=str(tmp_path / "missing.pem"), tls_key=str(pki.key))
    with pytest.raises(ConfigError, match="cannot use them as a certificate"):
        load(tls_certificate=str(pki.certificate), tls_key=str(pki.client_key))
    with pytest.raises(ConfigError, match="tls = true needs"):
        load(listeners=(Listener("native", 7411, tls=True),))
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[[listener]]\nprotocol = "native"\nport = 1\ntls = "yes"\n')
    with pytest.raises(ConfigError, match=r"listener\[0\].tls = 'yes': expected true or false"):
        load_config(bad_file, registry=registry)
    with pytest.raises(ConfigError, match=r"--key .*: give the client certificate too"):
        client_context(key=pki.client_key)
    assert server_context(pki.certificate, pki.key).minimum_version == ssl.TLSVersion.TLSv1_2


async def test_the_cli_speaks_tls_with_ca_cert_and_key(
    start_server: StartServer,
    pki: Pki,
    registry: ProtocolRegistry,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = await start_server("network", **pki.server_fields(mutual=True))
    host, port = server.address("network")
    common = ["--protocol", "network", "--server", f"{host}:{port}", "--timeout", "5s"]

    def cli(*args: str) -> int:
        return main([*common, *args, "stats", "--json"], registry=registry)

    mutual = ("--ca", str(pki.ca), "--cert", str(pki.client_certificate))
    assert await trio.to_thread.run_sync(cli, *mutual, "--key", str(pki.client_key)) == 0
    assert '"connections": 1' in capfd.readouterr().out
    assert await trio.to_thread.run_sync(cli, "--tls", "--ca", str(pki.stranger_ca)) == 1
    assert "not trusted" in capfd.readouterr().err


async def test_a_non_loopback_host_without_tls_warns_at_startup(
    start_server: StartServer, pki: Pki, caplog: Caplog
) -> None:
    await start_server("native", host="0.0.0.0")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.0.0.0 is reachable from the network" in m and "native" in m for m in warnings)
    caplog.clear()
    await start_server("native", host="0.0.0.0", **pki.server_fields())
    await start_server("native")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_serve_with_an_unusable_tls_file_exits_2_naming_it(
    pki: Pki, registry: ProtocolRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"
    argv = ["serve", "--tls-cert", str(missing), "--tls-key", str(pki.key)]
    assert main(argv, registry=registry) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "cannot read it" in err
