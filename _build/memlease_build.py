"""The build backend: setuptools', deciding whether setup.py compiles with mypyc.

``MEMLEASE_MYPYC`` decides:

- ``1``: compiled; a build without a C compiler fails.
- ``0``: interpreted.
- unset: a wheel (``pip install .``, ``pip wheel .``) is compiled where a C compiler can
  build a Python extension, and interpreted where none can; an editable install
  (``pip install -e .``) is interpreted, since compiled modules beside their sources would
  hide later edits of them; an sdist holds the Python sources only, always.

When it compiles, it asks for mypy as well (mypyc comes with it). The decision is passed to
setup.py as ``MEMLEASE_MYPYC=1`` or ``0``: each hook runs in a process of its own."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from setuptools import build_meta as _setuptools

MYPYC = "MEMLEASE_MYPYC"

Build = Literal["wheel", "editable", "sdist"]

_PROBE = "#include <Python.h>\nint memlease_probe(void) { return Py_IsInitialized(); }\n"


class BuildSettingError(ValueError):
    """MEMLEASE_MYPYC holds something other than 1, 0 or nothing."""


def c_compiler_found() -> bool:
    """Whether the C compiler a build would use (``$CC``, else the one Python was built
    with) compiles a file that includes this Python's headers."""
    command = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    paths = sysconfig.get_paths()
    includes = [f"-I{paths[name]}" for name in ("include", "platinclude")]
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, "probe.c")
        source.write_text(_PROBE)
        try:
            done = subprocess.run(
                [*command, *includes, "-c", str(source), "-o", str(source.with_suffix(".o"))],
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


def compiles(build: Build, *, building: bool = False) -> bool:
    """Whether a build of this kind compiles, by MEMLEASE_MYPYC and the machine.

    ``building``: asked by the build itself, not for its requirements. Unasked, it then also
    needs mypyc importable: a frontend that skips the requirements step (``pip install
    --no-build-isolation``) gets the interpreted build, not a failure."""
    asked = os.environ.get(MYPYC, "")
    if asked not in ("", "0", "1"):
        raise BuildSettingError(
            f"{MYPYC}={asked!r}: say 1 (compile with mypyc), 0 (do not) or leave it unset "
            "(compile a wheel where a C compiler is found)"
        )
    if build == "sdist":
        return False
    if asked:
        return asked == "1"
    if build == "editable":
        return False
    if not c_compiler_found():
        why = "no C compiler builds Python extensions here"
    elif building and importlib.util.find_spec("mypyc") is None:
        why = "mypyc is not installed where this build runs"
    else:
        return True
    print(
        f"memlease: {why}: the modules will run interpreted "
        f"(set {MYPYC}=1 to require the compiled build)",
        file=sys.stderr,
    )
    return False


def _requires(build: Build) -> list[str]:
    if not compiles(build):
        return []
    # mypyc type-checks what it compiles as `mypy memlease plugins` does: with the
    # dependencies' own types (trio, pluggy, dnspython...), so those too.
    with open("pyproject.toml", "rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    return ["mypy>=1.10", *dependencies]


@contextmanager
def _deciding(build: Build) -> Iterator[None]:
    before = os.environ.get(MYPYC)
    os.environ[MYPYC] = "1" if compiles(build, building=True) else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[MYPYC]
        else:
            os.environ[MYPYC] = before


# setuptools' own get_requires hooks would run setup.py to ask, which imports mypyc when
# compiling: the requirement that brings mypyc cannot wait for it. setuptools >= 77 asks for
# nothing more.
def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires("wheel")


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires("editable")


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires("sdist")


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    with _deciding("wheel"):
        return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    with _deciding("editable"):
        return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    with _deciding("sdist"):
        return str(_setuptools.build_sdist(sdist_directory, config_settings))


# No prepare_metadata_for_build_wheel (or _editable): a frontend then takes the metadata from
# the built wheel, whose top_level.txt names mypyc's shared library when it was compiled.
