"""Which build of memlease is running: the modules pyproject.toml names for mypyc compiled,
or the same modules interpreted (README, "Compiled build")."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES

import memlease.core.service

COMPILED = "compiled with mypyc"
INTERPRETED = "interpreted"


def build_kind() -> str:
    """:data:`COMPILED` or :data:`INTERPRETED`: what the service module, which every build
    that compiles anything compiles, was loaded from."""
    path = memlease.core.service.__file__ or ""
    return COMPILED if path.endswith(tuple(EXTENSION_SUFFIXES)) else INTERPRETED
