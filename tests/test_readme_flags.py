"""The README's flag tables are what the parsers say (scripts/readme_flags.py regenerates them)."""

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_flags", ROOT / "scripts" / "readme_flags.py")
readme_flags = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_flags)


def test_readme_flag_tables_match_the_parsers():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- flags: train.py -->") == 1 and readme.count("<!-- flags: cascade_evaluation.py -->") == 1
    assert readme_flags.render(readme) == readme, "run python scripts/readme_flags.py"
    for flag in ("`--dataset-steps`", "`--n-iterations`, `--n_iterations`, `--recurrent-updates`, `--iters`",
                 "`--n-cascades`, `--n_cascades`", "`--lr-decay-method`", "`--dtype`, `--mixed-precision`"):
        assert flag in readme


def test_a_stale_table_is_rewritten():
    stale = "intro\n<!-- flags: cascade_evaluation.py -->\n| `--old-flag` | 1 | gone |\n<!-- /flags -->\nrest\n"
    rendered = readme_flags.render(stale)
    assert "--old-flag" not in rendered and "`--n-cascades`, `--n_cascades` | `1 2` |" in rendered
    assert rendered.startswith("intro\n") and rendered.endswith("<!-- /flags -->\nrest\n")


def test_table_rows_show_defaults_aliases_and_choices():
    parser = argparse.ArgumentParser()
    group = parser.add_argument_group("things")
    group.add_argument("--size", "--old-size", default=[3, 4], nargs=2, type=int, help="H W")
    group.add_argument("--mode", default="a", choices=["a", "b"], help="how")
    group.add_argument("--on", action="store_true", help="a | switch")
    group.add_argument("--hidden", default=argparse.SUPPRESS, help="ignored")
    table = readme_flags.flags_table(parser)
    assert "**things**" in table and "--hidden" not in table
    assert "| `--size`, `--old-size` | `3 4` | H W |" in table
    assert "| `--mode` | `a` | how (one of: a, b) |" in table
    assert "| `--on` | `off` | a \\| switch |" in table
