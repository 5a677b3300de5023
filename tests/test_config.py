"""Configuration: the shipped file, units, overrides and a one-line error for every bad value."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memlease.core.errors import ConfigError
from memlease.core.messages import IdKind
from memlease.protocol import ProtocolEntry, ProtocolRegistry, ProtocolSpec
from memlease.server.config import FILE_KEYS, Config, load_config, packaged_default_text
from memlease.server.config_values import Listener, parse_listener
from memlease.server.worst_case import (
    BASELINE_BYTES,
    BOUND_BYTES,
    CONNECTION_BYTES,
    LEASE_BYTES,
    WATCH_BYTES,
    worst_case_memory,
)
from memlease.units import parse_duration, parse_size

ROOT = Path(__file__).resolve().parent.parent


def _never(max_message: int) -> object:
    raise AssertionError("config never builds codecs")


def fake_registry(*names: str) -> ProtocolRegistry:
    """A registry naming protocols without codecs: config only checks names."""
    registry = ProtocolRegistry()
    for name in names:
        spec = ProtocolSpec(name, IdKind.INT, 0, "test", _never, _never)  # type: ignore[arg-type]
        registry.protocols[name] = ProtocolEntry(spec, "tests")
    return registry


REGISTRY = fake_registry("native", "network", "uuid")


def load(text: str, tmp_path: Path, **overrides: object) -> Config:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return load_config(path, overrides, registry=REGISTRY)


def error_of(text: str, tmp_path: Path, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, tmp_path, **overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the shipped file


def test_packaged_default_is_byte_equal_to_conf_server_toml() -> None:
    assert packaged_default_text() == (ROOT / "conf" / "server.toml").read_text()


def test_shipped_config_is_the_issue_s_defaults() -> None:
    config = load_config(ROOT / "conf" / "server.toml", registry=REGISTRY)
    assert config == Config()
    assert config.host == "127.0.0.1"
    assert config.listeners == (
        Listener("native", 7411),
        Listener("network", 7412),
        Listener("uuid", 7413),
    )
    assert config.arena_size == 64 * 1024 * 1024
    assert load_config(registry=REGISTRY) == config


def test_shipped_config_names_every_key_except_the_optional_lease_cap() -> None:
    text = packaged_default_text()
    for name, key in FILE_KEYS.items():
        leaf = key.rsplit(".", 1)[-1]
        optional = ("max_lease_size", "max_connections_per_client", "metrics_listen")
        if name in optional or name.startswith("tls_"):
            assert f"# {leaf} =" in text, key
        elif name == "listeners":
            assert "[[listener]]" in text
        else:
            assert f"\n{leaf} = " in text, key


def test_file_keys_cover_every_config_field() -> None:
    assert set(FILE_KEYS) == {f.name for f in fields(Config)}


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load("", tmp_path) == Config()


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("32B", 32),
        ("512 KiB", 512 * 1024),
        ("64MiB", 64 * 1024**2),
        ("1GiB", 1024**3),
        ("0.5KiB", 512),
        ("2kib", 2048),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_is_exact_however_long_the_number() -> None:
    assert parse_size("9007199254740993") == 2**53 + 1  # a float would round it
    assert parse_size("1" + "0" * 400) == 10**400
    assert parse_size("0.25KiB") == 256


def test_parse_duration_refuses_what_no_float_or_sane_limit_holds() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("1" + "0" * 400 + "s")
    with pytest.raises(ValueError, match="too long"):
        parse_duration("300000h")
    assert parse_duration("1000000000s") == 1e9


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("64MB", "bad size unit 'MB'"),
        ("-1", "negative"),
        ("1.5B", "whole number"),
        ("lots", "not a size"),
        ("", "not a size"),
    ],
)
def test_parse_size_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("5000", "needs a unit"),
        ("5d", "bad duration unit 'd'"),
        ("-1s", "negative"),
        ("s", "not a duration"),
    ],
)
def test_parse_duration_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**40), st.sampled_from(["B", "KiB", "MiB", "GiB"]))
def test_parse_size_scales_by_binary_units(n: int, unit: str) -> None:
    factor = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
    assert parse_size(f"{n}{unit}") == n * factor


def test_parse_listener() -> None:
    assert parse_listener("uuid=0") == Listener("uuid", 0)
    with pytest.raises(ValueError, match="PROTOCOL=PORT"):
        parse_listener("native")
    with pytest.raises(ValueError, match="not a number"):
        parse_listener("native=http")


# ---------------------------------------------------------------- overrides


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = load(
        'host = "127.0.0.1"\n[arena]\nsize = "1MiB"\n',
        tmp_path,
        host="::1",
        arena_size="4096",
        listeners=["uuid=0", "native=7500"],
        max_connections="7",
        max_connections_per_client="3",
        request_timeout="250ms",
        idle_timeout="2m",
        handshake_timeout="1500ms",
        max_ttl_ms="1h",
        max_message="1MiB",
        connection_memory="32MiB",
        log_level="DEBUG",
    )
    assert config == Config(
        host="::1",
        arena_size=4096,
        listeners=(Listener("uuid", 0), Listener("native", 7500)),
        max_connections=7,
        max_connections_per_client=3,
        request_timeout=0.25,
        idle_timeout=120.0,
        handshake_timeout=1.5,
        max_ttl_ms=3_600_000,
        max_message=1024 * 1024,
        connection_memory=32 * 1024 * 1024,
        log_level="debug",
    )


def test_the_new_limits_keys_from_the_file(tmp_path: Path) -> None:
    config = load(
        "[limits]\nmax_connections_per_client = 0\ntls_handshake_timeout = '2s'\n", tmp_path
    )
    assert (config.max_connections_per_client, config.handshake_timeout) == (0, 2.0)
    assert Config().max_connections_per_client is None  # a quarter of max_connections
    assert Config().handshake_timeout == 5.0


def test_typed_overrides_from_python(tmp_path: Path) -> None:
    config = load("", tmp_path, listeners=(Listener("native", 0),), max_ttl_ms=1500)
    assert config.listeners == (Listener("native", 0),)
    assert config.max_ttl_ms == 1500


# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("colour = 'blue'\n", {}, "unknown key colour = 'blue'"),
        ("[limits]\nmax_conns = 5\n", {}, "unknown key limits.max_conns = 5"),
        ("[arena]\nsize = '64MB'\n", {}, "arena.size = '64MB': bad size unit 'MB'"),
        ("[limits]\nmax_ttl = '1d'\n", {}, "limits.max_ttl = '1d': bad duration unit 'd'"),
        ("[limits]\nidle_timeout = 30\n", {}, "limits.idle_timeout = 30: give a unit"),
        ("[arena]\nsize = 'big'\n", {}, "arena.size = 'big': not a size"),
        ("[arena]\nsize = -4096\n", {}, "arena.size = -4096: a size cannot be negative"),
        ("[limits]\nmax_connections = -1\n", {}, "max_connections = -1: cannot be negative"),
        ("[limits]\nmax_connections = 0\n", {}, "max_connections = 0: must be more than zero"),
        ("[[listener]]\nprotocol = 'http'\nport = 80\n", {}, "'http=80': unknown protocol"),
        ("[[listener]]\nprotocol = 'native'\nport = 70000\n", {}, "'native=70000': a port"),
        ("[[listener]]\nprotocol = 'native'\nport = 'x'\n", {}, "listener[0].port = 'x'"),
        ("[[listener]]\nprotocol = 'native'\nport = 1\nhost = 'a'\n", {}, "unknown key host"),
        ("log_level = 'loud'\n", {}, "log_level = 'loud': unknown log level"),
        ("[arena]\nmin_block = 48\n", {}, "min_block = 48: must be a power of two"),
        ("[arena]\nsize = 1000\n", {}, "arena.size = 1000: must be a positive multiple"),
        ("[arena]\nmax_lease_size = '1GiB'\n", {}, "max_lease_size = '1GiB'"),
        ("[limits]\nmax_ttl = '30d'\n", {}, "bad duration unit 'd'"),
        ("[limits]\nmax_ttl = '25d'\n", {}, "bad duration unit"),
        ("[limits]\nmax_ttl = '600h'\n", {}, "at most 2147483647ms"),
        ("host = 'a'\nhost = 'b'\n", {}, "not valid TOML"),
        ("", {"arena_size": "64MB"}, "--arena = '64MB': bad size unit 'MB'"),
        ("", {"arena_size": "-1"}, "--arena = '-1': a size cannot be negative"),
        ("", {"max_message": "1.5B"}, "--max-message = '1.5B': not a whole number"),
        ("", {"max_message": "1023B"}, "--max-message = '1023B': must be at least 1 KiB"),
        ("[limits]\nmax_message = 12\n", {}, "limits.max_message = 12: must be at least"),
        ("", {"request_timeout": "5"}, "--request-timeout = '5': a duration needs a unit"),
        ("", {"idle_timeout": "-2s"}, "--idle-timeout = '-2s': a duration cannot be negative"),
        ("", {"max_connections": "many"}, "--max-connections = 'many': expected a whole"),
        ("", {"listeners": ["gopher=70"]}, "--listen = 'gopher=70': unknown protocol"),
        ("", {"listeners": ["native=-1"]}, "--listen = 'native=-1': a port is a number"),
        ("", {"listeners": ["native"]}, "--listen = 'native': expected PROTOCOL=PORT"),
        ("", {"listeners": ["native=1", "uuid=1"]}, "used by another listener"),
        ("", {"log_level": "chatty"}, "--log-level = 'chatty': unknown log level"),
        ("", {"arena_size": "1TiB"}, "bad size unit 'TiB'"),
        ("[limits]\nmax_connections_per_client = -1\n", {}, "per_client = -1: cannot be neg"),
        ("", {"max_connections_per_client": "x"}, "--max-connections-per-client = 'x'"),
        ("[limits]\ntls_handshake_timeout = 5\n", {}, "handshake_timeout = 5: give a unit"),
        ("", {"handshake_timeout": "0s"}, "--tls-handshake-timeout = '0s': must be more than"),
        ("[arena]\nsize = 9223372036854775808\n", {}, "too large (at most 9223372036854775807"),
        ("", {"idle_timeout": "1000000001s"}, "--idle-timeout = '1000000001s': too long"),
        ("", {"request_timeout": float("inf")}, "--request-timeout = inf: too long"),
        ("", {"max_connections": str(2**63)}, "--max-connections = '9223372036854775808'"),
        ("[arena]\nsize = 1" + "0" * 5000 + "\n", {}, "not valid TOML: Exceeds the limit"),
        ("", {"arena_size": "1" + "0" * 5000}, "0': too large"),
        ("", {"expiry_batch": "1" + "0" * 5000}, "0': too large"),
        ("", {"connection_memory": "64MB"}, "--connection-memory = '64MB': bad size unit"),
        ("", {"connection_memory": "1023KiB"}, "--connection-memory = '1023KiB': must be at least"),
        ("[limits]\nconnection_memory = 0\n", {}, "limits.connection_memory = 0: must be at"),
    ],
)
def test_bad_values_give_one_line_naming_key_and_value(
    tmp_path: Path, text: str, overrides: dict[str, object], expected: str
) -> None:
    assert expected in error_of(text, tmp_path, **overrides)


def test_a_lease_cap_above_the_largest_block_is_refused(tmp_path: Path) -> None:
    # 96 MiB is covered by a 64 MiB and a 32 MiB block: no lease can be larger than 64 MiB.
    text = "[arena]\nsize = '96MiB'\nmax_lease_size = '96MiB'\n"
    message = error_of(text, tmp_path)
    assert "arena.max_lease_size = '96MiB': above the arena's largest block" in message
    assert "64 MiB" in message and "arena.size" in message
    capped = load("[arena]\nsize = '96MiB'\nmax_lease_size = '64MiB'\n", tmp_path)
    assert capped.max_lease_size == 64 * 1024 * 1024


def test_a_lease_cap_a_reply_within_max_message_cannot_carry_is_refused(tmp_path: Path) -> None:
    text = "[arena]\nmax_lease_size = '64KiB'\n"
    message = error_of(text, tmp_path, max_message="32KiB")
    assert "arena.max_lease_size = '64KiB': a get reply of it would not fit" in message
    assert "--max-message = 32 KiB" in message
    assert load(text, tmp_path, max_message="65KiB").max_lease_size == 64 * 1024


def test_arena_larger_than_the_machine_is_refused_before_allocating(tmp_path: Path) -> None:
    message = error_of("", tmp_path, arena_size="1048576GiB")
    assert "more than this machine's memory" in message


def test_connection_memory_from_the_file_and_its_default(tmp_path: Path) -> None:
    assert Config().connection_memory == 256 * 1024 * 1024
    small = "[limits]\nconnection_memory = '2MiB'\nmax_message = '64KiB'\nmax_connections = 2\n"
    assert load(small, tmp_path).connection_memory == 2 * 2**20


def test_connection_memory_must_hold_a_message_a_batch_and_a_read_per_connection(
    tmp_path: Path,
) -> None:
    # 64 MiB + 4 KiB of message, 1 MiB + 64 KiB of replies and 320 KiB for a TLS stream,
    # 1024 x 64 KiB to read into.
    message = error_of("", tmp_path, connection_memory="128MiB")
    assert "--connection-memory = '128MiB': must be at least 132484 KiB (135663616 B)" in message
    assert "lower those or raise it" in message


def _machine_of(monkeypatch: pytest.MonkeyPatch, size: str) -> None:
    monkeypatch.setattr("memlease.server.worst_case._physical_memory", lambda: parse_size(size))


def test_the_worst_case_adds_every_part() -> None:
    worst = worst_case_memory(Config(arena_size=2 * 1024**3, min_block=32))
    blocks = 2 * 1024**3 // 32
    assert worst.blocks == blocks
    # arena columns + a lease, bound to its connection
    assert worst.bookkeeping == blocks * (1 + 4 + LEASE_BYTES + BOUND_BYTES)
    assert worst.watches == 1_000_000 * WATCH_BYTES
    assert worst.total == (
        2 * 1024**3
        + worst.bookkeeping
        + 256 * 1024**2
        + 1024 * CONNECTION_BYTES
        + worst.watches
        + BASELINE_BYTES
    )
    # Blocks of 4 GiB and more record the bytes asked in 8 bytes, not 4.
    huge = worst_case_memory(Config(arena_size=8 * 1024**3, min_block=1024**3))
    assert huge.bytes_per_block == 1 + 8 + LEASE_BYTES + BOUND_BYTES


def test_a_worst_case_beyond_the_machine_is_one_line_naming_each_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine_of(monkeypatch, "24GiB")
    message = error_of("[arena]\nsize = '4GiB'\n", tmp_path)
    # 128M blocks of 32 B: the leases' bookkeeping is the largest part.
    assert message.startswith("arena.min_block = 32: the worst case, ")
    parts = (
        "(arena 4 GiB + ",
        "leases' bookkeeping",
        f"{1 + 8 + LEASE_BYTES + BOUND_BYTES} B for each of 134217728 blocks of 32 B",
        "limits.connection_memory 256 MiB",
        "1024 connections at 8 KiB",
        "limits.max_watches 286.1 MiB",
        "for the interpreter",
        "more than this machine's memory (24 GiB)",
        "raise arena.min_block",
    )
    for part in parts:
        assert part in message, part
    # Larger blocks, fewer leases: the same arena fits.
    assert load("[arena]\nsize = '4GiB'\nmin_block = '4KiB'\n", tmp_path).arena_size == 4 << 30


def test_the_worst_case_names_the_largest_part_and_its_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine_of(monkeypatch, "1GiB")
    message = error_of("", tmp_path, connection_memory="2GiB")
    assert message.startswith("--connection-memory = '2GiB': the worst case")
    assert message.endswith("lower --connection-memory")
    message = error_of("[arena]\nmin_block = '64KiB'\n", tmp_path, arena_size="1GiB")
    assert message.startswith("--arena = '1GiB': the worst case")
    assert message.endswith("lower --arena")
    message = error_of("[limits]\nmax_watches = 10000000\n", tmp_path)
    assert "limits.max_watches = 10000000: the worst case" in message
    assert message.endswith("lower limits.max_watches")


def test_the_default_fits_a_24_gib_machine_and_a_2_gib_arena_needs_larger_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine_of(monkeypatch, "24GiB")
    assert load("", tmp_path) == Config()
    assert worst_case_memory(Config()).total < 2 * 1024**3
    # 64M leases of 32 B would take more bookkeeping than the machine has left.
    assert "raise arena.min_block" in error_of("", tmp_path, arena_size="2GiB")
    two = load("[arena]\nmin_block = '64B'\n", tmp_path, arena_size="2GiB")
    assert (two.arena_size, two.min_block) == (2 * 1024**3, 64)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read it: No such file"):
        load_config(tmp_path / "absent.toml", registry=REGISTRY)


def test_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown override 'colour'"):
        load_config(overrides={"colour": "blue"}, registry=REGISTRY)


def test_error_names_the_file(tmp_path: Path) -> None:
    assert str(tmp_path / "server.toml") in error_of("colour = 1\n", tmp_path)


def test_packaged_default_is_valid_with_the_installed_protocols() -> None:
    assert load_config() == Config()
