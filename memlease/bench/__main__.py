"""``python -m memlease.bench``: the benchmark without the ``memlease`` command."""

from __future__ import annotations

import argparse
import sys

from memlease.bench import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memlease bench", description="Benchmark memlease.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
