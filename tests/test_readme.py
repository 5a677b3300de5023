"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands(text: str) -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    test_command = next(c for c in _commands(readme) if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_serve_command_uses_the_shipped_config() -> None:
    readme = (ROOT / "README.md").read_text()
    serve_command = next(c for c in _commands(readme) if " serve" in c)
    config = serve_command.split("--config", 1)[1].split()[0]
    assert (ROOT / config).is_file()
