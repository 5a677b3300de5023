"""``memlease stats --arena-map PATH``: a picture of the server's arena.

A strip per top-level block, each cell coloured by how full it is: a PNG with matplotlib (the
``plot`` extra), else a compact text map. Fragmentation shows as stripes of used and free.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memlease.core.arena import ArenaMap, format_bytes

TEXT_CELLS = 1024
"""The most characters a text map shows (16 rows of 64): a screenful whatever the arena."""
TEXT_WIDTH = 64
PNG_WIDTH = 256
"""Cells per row of a strip in the PNG: a 4096-cell block is 16 rows."""
_SHADES = ".-+*#"
"""A text cell: free, then used up to 1/4, 1/2, 3/4, and more."""
NO_MATPLOTLIB = (
    "memlease: matplotlib is not installed, so this is a text map; "
    "for the PNG: pip install 'memlease[plot]'"
)


@dataclass(frozen=True)
class Strip:
    """One top-level block: its place, its size, and its cells (0 free .. 255 used)."""

    offset: int
    size: int
    cells: bytes


def strips(arena_map: ArenaMap, most: int) -> list[Strip]:
    """A strip per top-level block, with at most about ``most`` cells over all strips (at
    least one each): neighbouring cells merge into one holding their mean, rounded up, so a
    cell with any byte used never shows as free. A block smaller than a cell shows the cell
    it shares."""
    cell_bytes, cells = arena_map.cell_bytes, arena_map.cells
    found = []
    for offset, size in arena_map.top_level_blocks():
        first = offset // cell_bytes
        last = max(first + 1, -(-(offset + size) // cell_bytes))
        own = cells[first:last]
        share = max(1, most * size // arena_map.size)
        group = 1  # a power of two, so merged cells line up with buddy blocks
        while len(own) > group * share:
            group *= 2
        merged = bytes(
            -(-sum(own[i : i + group]) // len(own[i : i + group]))
            for i in range(0, len(own), group)
        )
        found.append(Strip(offset, size, merged))
    return found


def used_bytes(arena_map: ArenaMap) -> int:
    """About how many bytes are used, from the cells (within one cell's rounding each)."""
    return sum(level * arena_map.cell_bytes // 255 for level in arena_map.cells)


def text_map(arena_map: ArenaMap) -> str:
    """The map as lines of text: a heading per top-level block, then rows of cells."""
    lines = [
        f"arena {format_bytes(arena_map.size)}, about {format_bytes(used_bytes(arena_map))} "
        f"used; "
        f"'{_SHADES[0]}' free, '{_SHADES[1]}{_SHADES[2]}{_SHADES[3]}' up to 1/4, 1/2, 3/4 "
        f"used, '{_SHADES[4]}' more"
    ]
    for strip in strips(arena_map, TEXT_CELLS):
        chars = "".join(_SHADES[level and 1 + (level - 1) * 4 // 255] for level in strip.cells)
        one = format_bytes(strip.size // len(strip.cells)) if strip.cells else "-"
        lines.append(
            f"block at {format_bytes(strip.offset)} ({format_bytes(strip.size)}), "
            f"{len(strip.cells)} cells of {one}:"
        )
        lines.extend(chars[i : i + TEXT_WIDTH] for i in range(0, len(chars), TEXT_WIDTH))
    return "\n".join(lines)


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_png(arena_map: ArenaMap, path: Path, title: str) -> None:
    """Draw the map into ``path``: a strip per top-level block, PNG_WIDTH cells a row."""
    # Imported by name so that mypy and the core install need no matplotlib (an extra).
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # no display needed, and none assumed
    plt: Any = importlib.import_module("matplotlib.pyplot")
    LinearSegmentedColormap = importlib.import_module("matplotlib.colors").LinearSegmentedColormap

    shown = strips(arena_map, len(arena_map.cells))
    rows = [-(-len(strip.cells) // PNG_WIDTH) for strip in shown]
    colours = LinearSegmentedColormap.from_list("used", ["#e8f4ea", "#f2b134", "#b2182b"])
    figure, axes = plt.subplots(
        len(shown),
        1,
        figsize=(10, 1.2 + 0.25 * sum(rows) + 0.35 * len(shown)),
        height_ratios=rows,
        squeeze=False,
    )
    image = None
    for strip, axis, height in zip(shown, axes[:, 0], rows, strict=True):
        width = min(PNG_WIDTH, len(strip.cells))
        padded = list(strip.cells) + [-1] * (height * width - len(strip.cells))
        grid = [
            [float("nan") if v < 0 else v / 255 for v in padded[r * width : (r + 1) * width]]
            for r in range(height)
        ]
        image = axis.imshow(
            grid, cmap=colours, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
        )
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(
            f"{format_bytes(strip.offset)}\n+{format_bytes(strip.size)}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel(
        f"a strip per top-level block; a row of each holds up to {PNG_WIDTH} cells of "
        f"{format_bytes(arena_map.cell_bytes)}",
        fontsize=8,
    )
    figure.suptitle(title, fontsize=10)
    if image is not None:
        bar = figure.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01)
        bar.set_label("used fraction of a cell", fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def show(arena_map: ArenaMap, path: str, server: str) -> None:
    """Write the PNG to ``path`` (or print a text map: ``path`` is ``-``, or matplotlib is
    not installed, which stderr then says)."""
    if path != "-" and not have_matplotlib():
        print(NO_MATPLOTLIB, file=sys.stderr)
        path = "-"
    if path == "-":
        print(text_map(arena_map))
        return
    title = (
        f"memlease arena at {server}: {format_bytes(arena_map.size)}, "
        f"about {format_bytes(used_bytes(arena_map))} used, "
        f"{len(arena_map.cells)} cells of {format_bytes(arena_map.cell_bytes)}"
    )
    write_png(arena_map, Path(path), title)
    print(f"wrote {path}: {len(arena_map.cells)} cells of {format_bytes(arena_map.cell_bytes)}")
