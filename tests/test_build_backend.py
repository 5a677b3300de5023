"""The build backend decides whether a build compiles: MEMLEASE_MYPYC=1 or 0 when set; unset,
a wheel is compiled where a C compiler builds Python extensions and interpreted where none
does, an editable install is interpreted, an sdist never compiles. Builds that compile ask
for mypy. (.ci/run's second pass is a real compiled build; README, "Compiled build".)"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _backend() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "memlease_build", ROOT / "_build/memlease_build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backend = _backend()


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("MEMLEASE_MYPYC", raising=False)
    monkeypatch.chdir(ROOT)  # the backend reads pyproject.toml, as pip runs it
    return monkeypatch


def test_a_wheel_is_compiled_where_a_c_compiler_is_found(unset: pytest.MonkeyPatch) -> None:
    unset.setattr(backend, "c_compiler_found", lambda: True)
    assert backend.compiles("wheel")
    requires = backend.get_requires_for_build_wheel()
    assert requires[0] == "mypy>=1.10"
    assert "trio>=0.25" in requires  # mypyc type-checks against the dependencies' types


def test_a_wheel_is_interpreted_where_no_c_compiler_is_found(
    unset: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unset.setenv("CC", "/bin/false")
    assert not backend.c_compiler_found()
    assert not backend.compiles("wheel")
    assert backend.get_requires_for_build_wheel() == []
    assert "interpreted" in capsys.readouterr().err


def test_a_compiler_that_is_not_there_is_no_compiler(unset: pytest.MonkeyPatch) -> None:
    unset.setenv("CC", str(ROOT / "no-such-cc"))
    assert not backend.c_compiler_found()


@pytest.mark.skipif(
    os.environ.get("MEMLEASE_MYPYC") != "1", reason="needs the compiled pass's C compiler"
)
def test_the_compiler_that_built_the_compiled_modules_is_found() -> None:
    assert backend.c_compiler_found()


@pytest.mark.parametrize("build", ["editable", "sdist"])
def test_editable_installs_and_sdists_do_not_compile_unasked(
    unset: pytest.MonkeyPatch, build: str
) -> None:
    unset.setattr(backend, "c_compiler_found", lambda: True)
    assert not backend.compiles(build)


def test_asked_for_the_compiled_build_every_install_compiles(unset: pytest.MonkeyPatch) -> None:
    unset.setenv("MEMLEASE_MYPYC", "1")
    unset.setattr(backend, "c_compiler_found", lambda: False)  # and fails if there is none
    assert backend.compiles("wheel") and backend.compiles("editable")
    assert "mypy>=1.10" in backend.get_requires_for_build_editable()
    assert not backend.compiles("sdist")  # sources only
    assert backend.get_requires_for_build_sdist() == []


def test_asked_for_the_interpreted_build_nothing_compiles(unset: pytest.MonkeyPatch) -> None:
    unset.setenv("MEMLEASE_MYPYC", "0")
    unset.setattr(backend, "c_compiler_found", lambda: True)
    assert not backend.compiles("wheel")
    assert backend.get_requires_for_build_wheel() == []


def test_a_setting_that_means_neither_is_refused(unset: pytest.MonkeyPatch) -> None:
    unset.setenv("MEMLEASE_MYPYC", "yes")
    with pytest.raises(backend.BuildSettingError, match=r"say 1 .*, 0 .* or leave it unset"):
        backend.compiles("wheel")


def test_a_build_without_mypyc_where_it_runs_is_interpreted_unless_asked(
    unset: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # pip install --no-build-isolation skips the requirements step that brings mypy
    unset.setattr(backend, "c_compiler_found", lambda: True)
    unset.setattr(backend.importlib.util, "find_spec", lambda name: None)
    assert backend.compiles("wheel")  # for the requirements: mypy is asked for
    assert not backend.compiles("wheel", building=True)
    assert "mypyc is not installed" in capsys.readouterr().err
    unset.setenv("MEMLEASE_MYPYC", "1")
    assert backend.compiles("wheel", building=True)  # asked for: the build fails, and says why


def test_setup_py_is_told_the_decision_and_the_setting_is_restored(
    unset: pytest.MonkeyPatch,
) -> None:
    unset.setattr(backend, "c_compiler_found", lambda: True)
    with backend._deciding("wheel"):
        assert os.environ["MEMLEASE_MYPYC"] == "1"
    with backend._deciding("editable"):
        assert os.environ["MEMLEASE_MYPYC"] == "0"
    assert "MEMLEASE_MYPYC" not in os.environ
