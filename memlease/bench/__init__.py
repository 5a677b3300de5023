"""`memlease bench`: closed-loop load against memlease and its peers (memcached, redis).

The CLI registers the command with :func:`add_arguments` and :func:`run`; the rest of the
package is imported here lazily so that ``memlease --help`` stays fast.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``memlease bench`` to ``parser``."""
    from memlease.bench.command import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; returns the exit status."""
    from memlease.bench.command import run as run_command

    return run_command(args)
