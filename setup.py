"""The optional compiled build: ``MEMLEASE_MYPYC=1 pip install .`` compiles the modules that
pyproject.toml's [tool.memlease.mypyc] names with mypyc (a C compiler is needed; the build
fetches mypy). Without MEMLEASE_MYPYC=1 nothing is compiled and the same modules run
interpreted: their Python source is the only source either way. All else is in pyproject."""

from __future__ import annotations

import os
import tomllib

from setuptools import setup

if os.environ.get("MEMLEASE_MYPYC") == "1":
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        modules: list[str] = tomllib.load(file)["tool"]["memlease"]["mypyc"]["modules"]
    os.environ.setdefault("MYPYPATH", "plugins")  # memlease_wire's modules, by their names
    setup(ext_modules=mypycify(modules, opt_level="3", group_name="memlease"))
else:
    setup()
