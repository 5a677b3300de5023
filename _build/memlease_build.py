"""The build backend: setuptools', asking for mypy as well when MEMLEASE_MYPYC=1 asks for
the compiled build (setup.py). Without it a build needs nothing but setuptools, and no C
compiler."""

from __future__ import annotations

import os
import tomllib
from typing import Any

from setuptools.build_meta import *  # noqa: F403  (every hook setuptools gives, unchanged)


def _mypyc_requires() -> list[str]:
    # mypyc type-checks what it compiles as `mypy memlease plugins` does: with the
    # dependencies' own types (trio, pluggy, dnspython...), so those too.
    if os.environ.get("MEMLEASE_MYPYC") != "1":
        return []
    with open("pyproject.toml", "rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    return ["mypy>=1.10", *dependencies]


# setuptools' own hooks would run setup.py to ask, which imports mypyc when compiling: the
# requirement that brings mypyc cannot wait for it. setuptools >= 77 asks for nothing more.
_MYPYC = _mypyc_requires()


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_MYPYC)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_MYPYC)


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    # setup.py imports mypyc whenever MEMLEASE_MYPYC=1, an sdist's build too.
    return list(_MYPYC)
