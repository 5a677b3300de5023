"""Habits a memcached or Redis user brings: --version, defaults in help, a README that runs
as written, and a Python API that takes what a user naturally has (a UUID's string, str data).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio
from conftest import RunningServer
from trio.testing import MockClock

import memlease
from memlease.cli.main import main
from memlease.server.config import FLAGS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_package_version_and_build(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "memlease.cli.main", flag], capture_output=True, text=True
    )
    # the build under test is the one asked for (tests/test_build.py)
    build = "compiled with mypyc" if os.environ.get("MEMLEASE_MYPYC") == "1" else "interpreted"
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"memlease {memlease.__version__} ({build})\n",
        "",
    )


def test_serve_help_shows_each_flag_s_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in FLAGS.values():
        if flag != "--tls-key":  # it goes with --tls-cert
            help_of_flag = text.partition(f" {flag} ")[2].partition(" --")[0]
            assert "default" in help_of_flag, (flag, help_of_flag)
    assert "--max-ttl DURATION longest ttl of a lease or renewal (default 24h)" in text
    assert "(default native=7411, network=7412, uuid=7413)" in text


def test_readme_says_how_memlease_gets_on_path_before_using_it() -> None:
    readme = (ROOT / "README.md").read_text()
    first_use = readme.index("$ memlease")
    assert ". .venv/bin/activate" in readme[:first_use]


def test_readme_says_why_the_test_command_installs_the_demo_plugin() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "-e ./tests/thirdparty" in readme
    assert "memlease-demo-protocol" in readme and "`memlease protocols` lists a `demo`" in readme


def test_dir_lists_the_public_names_and_no_typing_helpers() -> None:
    names = dir(memlease)
    assert {"Client", "AsyncClient", "connect", "LeaseNotFound"} <= set(names)
    assert "Any" not in names and "TYPE_CHECKING" not in names
    assert all(hasattr(memlease, name) for name in names)


async def test_the_api_takes_a_uuid_s_string_and_str_data(
    server: RunningServer, mock_clock: MockClock
) -> None:
    def use() -> tuple[bytes, bytes]:
        with memlease.Client(server.address("uuid"), "uuid", registry=server.registry) as client:
            granted = client.lease(64, ttl_ms=5000)
            text_id = str(granted.lease_id)
            client.set(text_id, "héllo")
            client.write(text_id, 10, "wörld")
            region = client.get(text_id)
            piece = client.read(text_id, 10, 6)
            client.release(text_id)
            with pytest.raises(memlease.LeaseNotFound):
                client.stat(text_id)
            return region, piece

    region, piece = await trio.to_thread.run_sync(use)
    assert region.startswith("héllo".encode()) and piece == "wörld".encode()

    async with await server.connect("uuid") as client:
        granted = await client.lease(16, ttl_ms=5000)
        await client.set(str(granted.lease_id), "ok")
        assert (await client.get(str(granted.lease_id))).startswith(b"ok")


async def test_a_string_that_is_no_id_of_the_protocol_is_refused_clearly(
    server: RunningServer, mock_clock: MockClock
) -> None:
    async with await server.connect("network") as client:
        with pytest.raises(memlease.ProtocolError, match="is not an int"):
            await client.get(str(uuid.uuid4()))
        with pytest.raises(memlease.ProtocolError, match="'12' is not an int"):
            await client.get("12")
