"""``memlease stats --arena-map``: the PNG (with matplotlib), the text map, and the fallback
from one to the other, through ``memlease.cli.main`` against a real server on loopback."""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import RunningServer, StartServer

from memlease.cli import arena_map
from memlease.cli.main import main

Capture = pytest.CaptureFixture[str]


async def run(
    server: RunningServer, protocol: str, capsys: Capture, *argv: str
) -> tuple[int, str, str]:
    host, port = server.address(protocol)
    args = ["--server", f"{host}:{port}", "--protocol", protocol, *argv]
    status = await trio.to_thread.run_sync(partial(main, args, registry=server.registry))
    out, err = capsys.readouterr()
    return status, out, err


async def fragmented(start_server: StartServer, protocol: str) -> RunningServer:
    """A 64 KiB arena of 32-byte blocks (2,048 cells of 32 B) with 4 KiB in 1 KiB leases and
    64 single blocks, every other one of 128 released."""
    server = await start_server(protocol, arena_size=64 * 1024)
    async with await server.connect(protocol) as client:
        for _ in range(4):
            await client.lease(1024, 60_000)
        small = [(await client.lease(32, 60_000)).lease_id for _ in range(128)]
        await client.release_many(small[::2])
    return server


async def test_the_text_map_shows_every_used_byte(
    start_server: StartServer, protocol: str, capsys: Capture
) -> None:
    server = await fragmented(start_server, protocol)
    status, out, err = await run(server, protocol, capsys, "stats", "--arena-map", "-")
    assert (status, err) == (0, "")
    heading, block, *rows = out.splitlines()
    assert heading.startswith("arena 64 KiB, about 6 KiB used; '.' free")
    # 1,024 characters at most: each shows two 32-byte cells.
    assert block == "block at 0 B (64 KiB), 1024 cells of 64 B:"
    assert [len(row) for row in rows] == [64] * 16
    text = "".join(rows)
    # 4 KiB of whole leases fill 64 characters; the 64 live small blocks make 64 characters
    # at least half full ('+' when alone in their pair, '#' when their buddy lives too).
    assert text.count("#") + text.count("+") >= 64 + 32
    assert text.count(".") == 1024 - text.count("#") - text.count("+")
    assert set(text) <= set(".+#")


async def test_json_gives_every_cell(
    start_server: StartServer, protocol: str, capsys: Capture
) -> None:
    server = await fragmented(start_server, protocol)
    status, out, err = await run(server, protocol, capsys, "--json", "stats", "--arena-map", "-")
    assert (status, err) == (0, "")
    record = json.loads(out)
    cells = base64.b64decode(record["cells"])
    assert (record["arena_size"], record["min_block"], record["cell_bytes"]) == (65536, 32, 32)
    assert len(cells) == 2048
    assert cells.count(255) == 128 + 64 and cells.count(0) == 2048 - 192


@pytest.mark.skipif(
    not arena_map.have_matplotlib(),
    reason="matplotlib is not installed: pip install -e '.[plot]' to test the PNG",
)
async def test_the_png_shows_used_and_free_cells(
    start_server: StartServer, capsys: Capture, tmp_path: Path
) -> None:
    from matplotlib.image import imread

    server = await fragmented(start_server, "network")
    path = tmp_path / "arena.png"
    status, out, err = await run(server, "network", capsys, "stats", "--arena-map", str(path))
    assert (status, err) == (0, "")
    assert out == f"wrote {path}: 2048 cells of 32 B\n"
    pixels = imread(path)
    colours = {tuple(round(float(c), 2) for c in pixel[:3]) for row in pixels for pixel in row}
    free, used = (0.91, 0.96, 0.92), (0.7, 0.09, 0.17)  # the colour map's two ends
    assert free in colours and used in colours


async def test_without_matplotlib_a_text_map_is_printed_and_stderr_says_how_to_get_the_png(
    start_server: StartServer, capsys: Capture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arena_map, "have_matplotlib", lambda: False)
    server = await fragmented(start_server, "uuid")
    path = tmp_path / "arena.png"
    status, out, err = await run(server, "uuid", capsys, "stats", "--arena-map", str(path))
    assert status == 0
    assert err == arena_map.NO_MATPLOTLIB + "\n"
    assert out.startswith("arena 64 KiB") and "block at 0 B (64 KiB)" in out
    assert not path.exists()


def test_a_fleet_has_no_single_arena_to_draw(capsys: Capture) -> None:
    status = main(["--servers", "127.0.0.1:1,127.0.0.1:2", "stats", "--arena-map", "-"])
    _, err = capsys.readouterr()
    assert status == 2
    assert "draws one server's arena; give one --server" in err


async def test_the_readme_text_map_is_what_its_commands_print(
    start_server: StartServer, capsys: Capture
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    shown = readme.split("$ memlease stats --arena-map -\n", 1)[1].split("```", 1)[0]
    server = await start_server("native", arena_size=96 * 1024)
    async with await server.connect("native") as client:
        # memlease lease 32 --count 1500 --ttl 1h | awk 'NR % 2' | xargs memlease release
        granted = await client.lease_many(1500, 32, 3_600_000)
        await client.release_many([g.lease_id for g in granted[::2]])
        for size in (4096, 4096, 2048, 1024):
            await client.lease(size, 3_600_000)
    status, out, err = await run(server, "native", capsys, "stats", "--arena-map", "-")
    assert (status, err) == (0, "")
    assert out == shown
