"""The ``memlease`` command line: parsing, usage errors, protocols, bench (no server needed).

The commands against a real server are in tests/test_cli_server.py.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from memlease.cli.client_commands import UsageError, parse_lease_id, parse_server
from memlease.cli.main import main
from memlease.core.messages import IdKind
from memlease.protocol import ProtocolEntry, ProtocolRegistry, ProtocolSpec


def _never(max_message: int) -> object:
    raise AssertionError("no codec is built by these tests")


def spec(name: str, kind: IdKind = IdKind.INT, port: int = 7411) -> ProtocolSpec:
    return ProtocolSpec(name, kind, port, f"the {name} test protocol", _never, _never)  # type: ignore[arg-type]


def fake_registry() -> ProtocolRegistry:
    registry = ProtocolRegistry()
    for s in (spec("native"), spec("network", port=7412), spec("uuid", IdKind.UUID, 7413)):
        registry.protocols[s.name] = ProtocolEntry(s, "memlease")
    registry.problems.append("protocol plugin 'broken' from acme failed to load: ImportError: x")
    return registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv), registry=fake_registry())
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status, out, err = run(capsys, *argv)
    assert status == 2, (out, err)
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("memlease"), err
    return err


# ---------------------------------------------------------------- values


def test_parse_server() -> None:
    assert parse_server(None, 7412) == ("127.0.0.1", 7412)
    assert parse_server("example.org", 7411) == ("example.org", 7411)
    assert parse_server("10.0.0.1:9000", 7411) == ("10.0.0.1", 9000)
    assert parse_server("[::1]:9000", 7411) == ("::1", 9000)
    assert parse_server("[::1]", 7413) == ("::1", 7413)
    for bad in ("host:http", ":7411", "host:70000", "[::1]:x"):
        with pytest.raises(UsageError, match="expected HOST or HOST:PORT"):
            parse_server(bad, 7411)


def test_parse_lease_id_by_the_protocol_s_id_kind() -> None:
    assert parse_lease_id("123", spec("native")) == 123
    value = uuid.uuid4()
    assert parse_lease_id(str(value), spec("uuid", IdKind.UUID)) == value
    with pytest.raises(UsageError, match="native ids are positive integers"):
        parse_lease_id("abc", spec("native"))
    with pytest.raises(UsageError, match="positive integers"):
        parse_lease_id("0", spec("native"))
    with pytest.raises(UsageError, match="positive integers"):
        parse_lease_id(str(2**31), spec("native"))
    with pytest.raises(UsageError, match="uuid ids are UUIDs"):
        parse_lease_id("123", spec("uuid", IdKind.UUID))


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["frob"], "invalid choice: 'frob'"),
        ([], "the following arguments are required: COMMAND"),
        (["lease", "lots"], "argument SIZE: 'lots': not a size"),
        (["lease", "64MB"], "bad size unit 'MB'"),
        (["lease", "10", "--ttl", "5000"], "a duration needs a unit: 5000ms or 5000s"),
        (["lease", "10", "--ttl", "0s"], "a ttl is at least 1ms"),
        (["lease", "10", "--bogus"], "unrecognized arguments: --bogus"),
        (["get", "abc"], "bad lease id 'abc': protocol native ids are positive integers"),
        (["--protocol", "uuid", "get", "12"], "bad lease id '12': protocol uuid ids are UUIDs"),
        (["--protocol", "gopher", "stats"], "unknown protocol 'gopher'"),
        (["--server", "host:port", "stats"], "--server 'host:port': expected HOST"),
        (["read", "1", "-1", "4"], "argument OFFSET: '-1': a size cannot be negative"),
        (["renew", "1"], "the following arguments are required: --ttl"),
        (["set", "1"], "give DATA, --file PATH, or - for stdin"),
        (["set", "1", "x", "--file", "f"], "give DATA or --file, not both"),
        (["set", "1", "--file", "/nonexistent/f"], "--file /nonexistent/f: No such file"),
        (["serve", "--arena", "64MB"], "--arena = '64MB': bad size unit 'MB'"),
        (["serve", "--arena", "-4096"], "--arena = '-4096': a size cannot be negative"),
        (["serve", "--listen", "gopher=70"], "--listen = 'gopher=70': unknown protocol"),
        (["serve", "--listen", "native=99999"], "--listen = 'native=99999': a port is"),
        (["serve", "--max-ttl", "1d"], "--max-ttl = '1d': bad duration unit 'd'"),
        (["serve", "--idle-timeout", "30"], "--idle-timeout = '30': a duration needs a unit"),
        (["serve", "--max-connections", "-1"], "--max-connections = '-1': cannot be negative"),
        (["serve", "--log-level", "loud"], "--log-level = 'loud': unknown log level"),
        (["serve", "--max-message", "11B"], "--max-message = '11B': must be at least 1 KiB"),
        (["serve", "--config", "/nonexistent.toml"], "cannot read it: No such file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert expected in one_line_error(capsys, *argv)


def test_bad_config_file_names_the_key_and_value(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[limits]\nmax_conections = 5\n")
    err = one_line_error(capsys, "serve", "--config", str(path))
    assert f"config {path}: unknown key limits.max_conections = 5" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("serve", "lease", "get", "set", "stats", "protocols", "bench"):
        assert command in out
    status, out, _ = run(capsys, "serve", "--help")
    assert status == 0
    assert "--request-timeout" in out
    assert "--listen PROTOCOL=PORT" in out


# ---------------------------------------------------------------- protocols


def test_protocols_lists_name_kind_port_distribution_and_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "protocols")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "ID", "PORT", "DISTRIBUTION"]
    assert lines[1].split()[:4] == ["native", "int", "7411", "memlease"]
    assert lines[3].split()[:4] == ["uuid", "uuid", "7413", "memlease"]
    assert "problem: protocol plugin 'broken' from acme failed to load" in lines[4]


def test_protocols_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "protocols", "--json")
    assert status == 0
    record = json.loads(out)
    assert [p["name"] for p in record["protocols"]] == ["native", "network", "uuid"]
    assert record["protocols"][2] == {
        "name": "uuid",
        "id_kind": "uuid",
        "default_port": 7413,
        "distribution": "memlease",
        "description": "the uuid test protocol",
    }
    assert len(record["problems"]) == 1


# ---------------------------------------------------------------- bench


def test_bench_missing_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "memlease.bench", None)
    err = one_line_error(capsys, "bench", "--ops", "10")
    assert err.startswith("memlease bench: the benchmark is not available")


def test_bench_gets_its_own_arguments(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    fake = ModuleType("memlease.bench")
    fake.add_arguments = lambda parser: parser.add_argument("--ops", type=int)  # type: ignore[attr-defined]

    def run_bench(args: argparse.Namespace) -> int:
        seen.append(args.ops)
        return 0

    fake.run = run_bench  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "memlease.bench", fake)
    assert run(capsys, "bench", "--ops", "10")[0] == 0
    assert seen == [10]
    status, out, _ = run(capsys, "bench", "--help")
    assert status == 0
    assert "--ops" in out
    assert "unrecognized arguments: --frob" in one_line_error(capsys, "bench", "--frob")


def test_help_does_not_import_the_trio_shells_or_bench() -> None:
    code = (
        "import sys; from memlease.cli.main import main; main(['--help']); "
        "print(sorted(m for m in sys.modules if m.startswith(('trio', 'memlease.bench', "
        "'memlease.server.run', 'memlease.client.blocking'))))"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"
    assert time.monotonic() - started < 5


def test_readme_table_names_every_serve_flag_and_config_key() -> None:
    from memlease.server.config import FILE_KEYS, FLAGS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("## Server configuration", 1)[1]
    for flag in FLAGS.values():
        assert f"`{flag} " in table, flag
    for name, key in FILE_KEYS.items():
        assert (f"`{key}`" if name != "listeners" else "`[[listener]]`") in table, key


def test_protocols_lists_the_installed_built_ins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    found = {
        row["name"]: (row["id_kind"], row["default_port"], row["distribution"])
        for row in record["protocols"]
    }
    assert found["native"] == ("int", 7411, "memlease")
    assert found["network"] == ("int", 7412, "memlease")
    assert found["uuid"] == ("uuid", 7413, "memlease")


def test_a_silent_server_fails_after_timeout_with_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as silent:  # accepts (in the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        status = main(["--server", f"127.0.0.1:{port}", "--timeout", "100ms", "stats"])
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"memlease: 127.0.0.1:{port}: no reply within 0.1 s")
