"""A memlease server in a child process for the benchmark: listens on free loopback ports and
prints them as one JSON line on stdout, then serves until SIGTERM or SIGINT.

Run as ``python -m memlease.bench.serverproc [--config PATH] [--arena SIZE] PROTOCOL...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

import trio

from memlease.server.config import Config, load_config
from memlease.server.config_values import Listener
from memlease.server.glibc_malloc import keep_large_blocks


async def _serve_and_announce(config: Config) -> None:
    from memlease.server.run import serve

    async with trio.open_nursery() as nursery:
        bound: Any = await nursery.start(serve, config)
        ports = {listener.protocol: listener.port for listener in bound}
        print(json.dumps({"host": config.host, "ports": ports}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memlease.bench.serverproc")
    parser.add_argument("protocols", nargs="+")
    parser.add_argument("--config", default=None)
    parser.add_argument("--arena", default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {"log_level": args.log_level}
    if args.arena:
        overrides["arena_size"] = args.arena
    config = load_config(args.config, overrides)
    config = replace(
        config,
        host="127.0.0.1",
        listeners=tuple(Listener(name, 0) for name in args.protocols),
    )
    # the same process-wide allocator setting as `memlease serve`, so bench measures that server
    keep_large_blocks(config.max_message)
    trio.run(_serve_and_announce, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
