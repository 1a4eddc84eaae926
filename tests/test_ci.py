"""CI runs the README's test command verbatim, after the linter."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith("-m pytest -q"))
    lines = (ROOT / ".ci/run").read_text().splitlines()
    assert command in lines
    lint = next(i for i, line in enumerate(lines) if line.endswith("ruff check ."))
    assert lint < lines.index(command)
