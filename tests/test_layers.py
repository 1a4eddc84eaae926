"""The import rules of docs/architecture.md, read from the source (every import statement, also those inside
functions): the library packages data/, models/ and utils/ import neither the pipelines (presets.py,
transforms.py) nor an entry script."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("data", "models", "utils")
ENTRY_SCRIPTS = {p.stem for p in ROOT.glob("*.py")} - {"presets", "transforms"}
FORBIDDEN = {"presets", "transforms"} | ENTRY_SCRIPTS


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (relative imports stay inside their package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_imports_no_pipeline_and_no_entry_script():
    assert {"train", "cascade_evaluation", "predict"} <= ENTRY_SCRIPTS
    found = set()
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            found.update((relative, name) for name in imported_modules(path) & FORBIDDEN)
    assert found == set()


def test_the_parser_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from presets import X\n    import transforms as T\n")
    assert imported_modules(source) == {"os", "presets", "transforms"}
