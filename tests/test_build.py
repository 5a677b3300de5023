"""The build under test is the one asked for: with MEMLEASE_MYPYC=1 (the compiled build,
.ci/run's second pass) every module pyproject.toml names for mypyc is compiled; without it
none is, so a compiled build left beside the sources cannot pass for the interpreted one."""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _compiled_modules() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        paths = tomllib.load(file)["tool"]["memlease"]["mypyc"]["modules"]
    return [p.removeprefix("plugins/").removesuffix(".py").replace("/", ".") for p in paths]


def test_the_modules_named_for_mypyc_are_compiled_exactly_when_it_is_asked_for() -> None:
    compiled = os.environ.get("MEMLEASE_MYPYC") == "1"
    names = _compiled_modules()
    assert "memlease.core.service" in names and "memlease_wire.framing" in names
    for name in names:
        path = importlib.import_module(name).__file__ or ""
        assert path.endswith(".py") is not compiled, (name, path)


def test_no_module_named_for_mypyc_imports_trio() -> None:
    # They are the sans-IO core and the connection's rules: a compiled trio shell would
    # be a second kind of module to keep working both ways.
    for name in _compiled_modules():
        source = (ROOT / ("plugins" if name.startswith("memlease_") else "")).joinpath(
            *name.split(".")
        )
        assert "import trio" not in source.with_suffix(".py").read_text(), name
