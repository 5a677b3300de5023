"""The arena map: BuddyArena.block_map against a model, its bound, and the request end to end
over every protocol with both clients."""

from __future__ import annotations

import pytest
import trio
from conftest import RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st
from memlease_native import NATIVE
from memlease_network import NETWORK
from memlease_uuid import UUID

from memlease.client import calls
from memlease.core.arena import MAP_CELLS, ArenaMap, BuddyArena
from memlease.core.errors import ProtocolError
from memlease.core.messages import ArenaMapReply, ArenaMapRequest, LeaseRequest
from memlease.core.service import Service


def model_map(size: int, min_block: int, blocks: dict[int, int], max_cells: int) -> ArenaMap:
    """The map worked out the slow way: a used flag per unit, summed per cell."""
    units = size // min_block
    used = [0] * units
    for offset, block in blocks.items():
        for unit in range(offset // min_block, (offset + block) // min_block):
            used[unit] = 1
    cell_units = 1
    while -(-units // cell_units) > max_cells:
        cell_units *= 2
    cells = bytearray()
    for start in range(0, units, cell_units):
        part = used[start : start + cell_units]
        cells.append(-(-sum(part) * 255 // len(part)))
    return ArenaMap(size, min_block, min_block * cell_units, bytes(cells))


@settings(max_examples=150, deadline=None)
@given(
    units=st.integers(1, 700),
    min_block=st.sampled_from([1, 16, 32]),
    max_cells=st.integers(1, 300),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 300)), max_size=60),
)
def test_the_map_matches_a_used_flag_per_unit_summed_per_cell(
    units: int, min_block: int, max_cells: int, steps: list[tuple[bool, int]]
) -> None:
    arena = BuddyArena(units * min_block, min_block=min_block, map_cells=max_cells)
    blocks: dict[int, int] = {}
    for grant, n in steps:
        if grant or not blocks:
            if arena.has_free_block(arena.order_for(n * min_block // 8 + 1)):
                offset = arena.alloc(n * min_block // 8 + 1)
                blocks[offset] = arena.block_size(offset)
        else:
            offset = sorted(blocks)[n % len(blocks)]
            arena.free(offset)
            del blocks[offset]
    got = arena.block_map()
    assert got == model_map(arena.size, min_block, blocks, max_cells)
    assert len(got.cells) <= max_cells
    assert got.top_level_blocks() == arena.top_level_blocks


def test_counts_kept_per_cell_follow_frees_that_coalesce_and_blocks_over_many_cells() -> None:
    arena = BuddyArena(1024 * 32, min_block=32, map_cells=16)  # cells of 64 units
    whole = arena.alloc(1024 * 32)
    assert arena.block_map().cells == bytes([255] * 16)
    arena.free(whole)
    offsets = [arena.alloc(32) for _ in range(1024)]
    arena.free_many(offsets)  # every buddy pair merges, up to the whole arena
    assert arena.block_map().cells == bytes(16)
    assert arena.alloc(1024 * 32) == 0


def test_a_cell_is_0_only_when_all_free_and_255_when_all_used() -> None:
    arena = BuddyArena(1 << 20, min_block=32)  # 32,768 units: 4,096 cells of 8 units
    arena.alloc(1)  # one unit of the first cell
    arena.alloc(256)  # the whole second cell
    got = arena.block_map()
    assert got.cell_bytes == 256
    assert got.cells[:3] == bytes([32, 255, 0])  # ceil(1/8 * 255) = 32
    assert set(got.cells[2:]) == {0}


def test_the_reply_stays_within_its_bound_with_a_million_live_leases() -> None:
    service = Service.create(64 << 20, min_block=32)  # 2 Mi units
    arena = service.table.arena
    offsets = [arena.alloc(32) for _ in range(1_200_000)]
    arena.free_many(offsets[::6])  # 1,000,000 live, scattered holes
    assert arena.live_blocks == 1_000_000
    reply = service.handle(ArenaMapRequest(), 0.0)
    assert isinstance(reply, ArenaMapReply)
    assert len(reply.cells) == MAP_CELLS
    assert reply.cell_bytes == (64 << 20) // MAP_CELLS
    # The first 1.2 M units hold 1 M live blocks: ceil(5/6 * 255) = 213 in each cell there.
    full_cells = 1_200_000 * 32 // reply.cell_bytes
    assert set(reply.cells[: full_cells - 1]) == {213}
    assert set(reply.cells[full_cells + 1 :]) == {0}
    # On the wire: the cells and a fixed part (native 12 + 32 bytes, network and uuid 8 + 24).
    for spec in (NATIVE, NETWORK, UUID):
        assert len(spec.server_codec(1 << 20).encode_reply(reply)) <= MAP_CELLS + 44


def test_a_fresh_odd_sized_arena_maps_every_byte_as_free() -> None:
    service = Service.create(13 * 32 + 5, min_block=32)
    reply = service.handle(ArenaMapRequest(), 0.0)
    assert reply == ArenaMapReply(416, 32, 32, bytes(13))
    service.handle(LeaseRequest(100, 1000), 0.0)
    reply = service.handle(ArenaMapRequest(), 0.0)
    assert isinstance(reply, ArenaMapReply)
    start = reply.cells.index(255)  # the 128-byte block: 4 cells, aligned to 4
    assert start % 4 == 0
    assert reply.cells == bytes(start) + bytes([255] * 4) + bytes(13 - start - 4)


async def test_both_clients_get_the_map_over_every_protocol(server: RunningServer) -> None:
    for protocol in ("native", "network", "uuid"):
        async with await server.connect(protocol) as client:
            granted = await client.lease(4096, 60_000)
            got = await client.arena_map()
            assert got.size == server.config.arena_size
            assert len(got.cells) <= MAP_CELLS
            assert any(got.cells)
            await client.release(granted.lease_id)

    def blocking() -> ArenaMap:
        with server.client("uuid") as client:
            return client.arena_map()

    got = await trio.to_thread.run_sync(blocking)
    assert got.size == server.config.arena_size
    assert not any(got.cells)


def test_a_map_that_does_not_add_up_is_refused_by_the_client() -> None:
    call = calls.arena_map()
    good = ArenaMapReply(416, 32, 64, bytes(7))
    assert call.result(call.request, good) == ArenaMap(416, 32, 64, bytes(7))
    for bad in (
        ArenaMapReply(416, 32, 0, bytes(7)),
        ArenaMapReply(416, 0, 64, bytes(7)),
        ArenaMapReply(416, 32, 96, bytes(5)),
        ArenaMapReply(416, 32, 64, bytes(6)),
        ArenaMapReply(400, 32, 64, bytes(7)),
    ):
        with pytest.raises(ProtocolError, match="does not add up"):
            call.result(call.request, bad)
