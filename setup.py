"""The compiled build: with MEMLEASE_MYPYC=1, which the build backend (_build/memlease_build.py)
sets when it decides to compile, the modules that pyproject.toml's [tool.memlease.mypyc] names
are compiled with mypyc; otherwise nothing is, and the same modules run interpreted. Their
Python source is the only source either way. All else is in pyproject."""

from __future__ import annotations

import os
import tomllib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):  # type: ignore[misc]  (setuptools is untyped)
    """Compiles an extension's C files on every core at once: setuptools compiles one after
    another, and mypyc's single shared library is one extension of about 40 C files (one per
    module, multi_file below): 90 s one by one, 47 s on 2 cores."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.parallel = None  # build_ext -j would build extensions side by side: one at a time

    def build_extension(self, ext: Extension) -> None:
        compiler = self.compiler
        one_by_one = compiler.compile

        def on_every_core(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
            with ThreadPoolExecutor(_jobs()) as pool:
                built = pool.map(lambda source: one_by_one([source], *args, **kwargs), sources)
                return [obj for objects in built for obj in objects]

        compiler.compile = on_every_core
        try:
            super().build_extension(ext)
        finally:
            compiler.compile = one_by_one


def _jobs() -> int:
    # The cores this process may use, not the machine's: and at most 8 gcc -O3 at once,
    # each of which can take hundreds of MB on mypyc's larger files.
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, min(8, len(usable) if usable else os.cpu_count() or 1))


# Each build in a build directory of its own: a wheel built interpreted after a compiled one
# must not pick up the compiled modules left in build/lib.
if os.environ.get("MEMLEASE_MYPYC") == "1":
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        modules: list[str] = tomllib.load(file)["tool"]["memlease"]["mypyc"]["modules"]
    os.environ.setdefault("MYPYPATH", "plugins")  # memlease_wire's modules, by their names
    # multi_file: a C file per module, which can compile side by side. One file of 7 MB
    # compiled in 90 s on one core; the route's instructions per message are the same
    # (8,186 multi_file, 8,308-8,551 one file: docs/performance.md, "Eighth round").
    extensions = mypycify(modules, opt_level="3", group_name="memlease", multi_file=True)
    setup(
        ext_modules=extensions,
        cmdclass={"build_ext": ParallelBuildExt},
        options={"build": {"build_base": "build/compiled"}},
    )
else:
    setup(options={"build": {"build_base": "build/interpreted"}})
