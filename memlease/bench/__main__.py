"""``python -m memlease.bench``: the benchmark without the ``memlease`` command."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from memlease.bench import add_arguments, run


class _Parser(argparse.ArgumentParser):
    """A bad option in one line and exit status 2, as ``memlease`` itself reports one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="memlease bench", description="Benchmark memlease.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad option already reported
        return exit_.code if isinstance(exit_.code, int) else 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
