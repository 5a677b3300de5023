"""The plugin system: entry points in, a registry out; broken plugins reported, not fatal."""

from __future__ import annotations

import importlib.metadata
import re
import textwrap
from pathlib import Path

import pytest

from memlease.core.messages import IdKind
from memlease.protocol import ENTRY_POINT_GROUP, load_protocols

ROOT = Path(__file__).resolve().parent.parent


def test_installed_plugins_are_found_with_their_distributions() -> None:
    registry = load_protocols(warn=False)
    rows = {
        name: (entry.spec.id_kind, entry.spec.default_port, entry.distribution)
        for name, entry in registry.protocols.items()
    }
    assert rows == {
        "native": (IdKind.INT, 7411, "memlease"),
        "network": (IdKind.INT, 7412, "memlease"),
        "uuid": (IdKind.UUID, 7413, "memlease"),
        "demo": (IdKind.INT, 7499, "memlease-demo-protocol"),
    }
    assert registry.problems == []


def test_the_core_imports_no_protocol_by_name() -> None:
    plugin_names = re.compile(r"memlease_(native|network|uuid|wire|demo)")
    for path in (ROOT / "memlease").rglob("*.py"):
        assert not plugin_names.search(path.read_text()), path


def _entry_point(name: str, module: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=module, group=ENTRY_POINT_GROUP)


def _installed() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _write_plugin(directory: Path, module: str, body: str) -> None:
    (directory / f"{module}.py").write_text(textwrap.dedent(body))


def test_a_plugin_that_raises_on_import_is_reported_and_the_others_load(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_plugin(plugin_dir, "memlease_test_broken_a", "raise RuntimeError('missing libfoo')\n")
    registry = load_protocols([*_installed(), _entry_point("broken", "memlease_test_broken_a")])
    assert {"native", "network", "uuid", "demo"} <= set(registry.protocols)
    assert len(registry.problems) == 1
    assert "'broken'" in registry.problems[0] and "missing libfoo" in registry.problems[0]
    assert "warning" in capsys.readouterr().err and "missing libfoo" in registry.problems[0]


def test_a_duplicate_name_is_reported_and_the_first_kept(plugin_dir: Path) -> None:
    _write_plugin(
        plugin_dir,
        "memlease_test_dup_b",
        """
        from memlease_native import NATIVE
        from dataclasses import replace
        from memlease.protocol import hookimpl

        @hookimpl
        def memlease_protocols():
            return [replace(NATIVE, description="an impostor")]
        """,
    )
    registry = load_protocols(
        [*_installed(), _entry_point("zz-dup", "memlease_test_dup_b")], warn=False
    )
    assert registry.protocols["native"].spec.description != "an impostor"
    assert registry.problems == [
        "protocol plugin zz-dup (?) registers 'native', already provided by memlease; ignored"
    ]


def test_a_hook_that_fails_or_returns_junk_is_reported(plugin_dir: Path) -> None:
    _write_plugin(
        plugin_dir,
        "memlease_test_bad_c",
        """
        from memlease.protocol import hookimpl

        @hookimpl
        def memlease_protocols():
            raise ValueError("no config")
        """,
    )
    _write_plugin(
        plugin_dir,
        "memlease_test_bad_d",
        """
        from memlease.protocol import hookimpl

        @hookimpl
        def memlease_protocols():
            return ["not a spec"]
        """,
    )
    registry = load_protocols(
        [
            *_installed(),
            _entry_point("bad-c", "memlease_test_bad_c"),
            _entry_point("bad-d", "memlease_test_bad_d"),
        ],
        warn=False,
    )
    assert "native" in registry.protocols
    assert len(registry.problems) == 2
    assert "bad-c (?) failed in memlease_protocols: ValueError: no config" in registry.problems[0]
    assert "bad-d (?) returned 'not a spec', not a ProtocolSpec" in registry.problems[1]


def test_a_codec_missing_what_the_interface_requires_is_reported(plugin_dir: Path) -> None:
    _write_plugin(
        plugin_dir,
        "memlease_test_codecs_e",
        """
        from dataclasses import replace
        from memlease.protocol import ServerCodec, hookimpl
        from memlease_native import NATIVE

        class NoBuffered(ServerCodec):  # written to the interface before buffered() was in it
            def __init__(self, max_message):
                pass
            def feed(self, data):
                pass
            def next_request(self):
                return None
            def encode_reply(self, reply):
                return b""

        class NotACodec:  # the methods, but not the declared interface
            def __init__(self, max_message):
                pass

        @hookimpl
        def memlease_protocols():
            return [
                replace(NATIVE, name="no-buffered", server_codec=NoBuffered),
                replace(NATIVE, name="undeclared", client_codec=NotACodec),
            ]
        """,
    )
    registry = load_protocols(
        [*_installed(), _entry_point("codecs-e", "memlease_test_codecs_e")], warn=False
    )
    assert "no-buffered" not in registry.protocols and "undeclared" not in registry.protocols
    no_buffered, undeclared = registry.problems
    assert "'no-buffered' cannot make a server codec" in no_buffered and "buffered" in no_buffered
    assert "client codec NotACodec is not a memlease.protocol.ClientCodec" in undeclared


def test_unknown_protocol_names_the_known_ones() -> None:
    registry = load_protocols(warn=False)
    with pytest.raises(KeyError, match=r"unknown protocol 'carrier-pigeon'.*native, network"):
        registry.get("carrier-pigeon")


def test_memlease_protocols_lists_the_third_party_plugin_and_the_broken_one(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memlease.cli.main import main

    _write_plugin(plugin_dir, "memlease_test_broken_e", "import no_such_module_here\n")
    registry = load_protocols(
        [*_installed(), _entry_point("broken-e", "memlease_test_broken_e")], warn=False
    )
    main(["protocols"], registry=registry)
    out = capsys.readouterr()
    text = out.out + out.err
    assert re.search(r"demo\s+int\s+7499\s+memlease-demo-protocol", text)
    assert re.search(r"uuid\s+uuid\s+7413\s+memlease", text)
    assert "'broken-e'" in text and "no_such_module_here" in text
