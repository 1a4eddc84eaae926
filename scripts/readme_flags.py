"""The README's flag tables, generated from the entry scripts' own parsers so that they cannot drift.

    python scripts/readme_flags.py           # rewrite the tables between the README's markers
    python scripts/readme_flags.py --check   # exit 1 if a table differs from its parser (tests/test_readme_flags.py)

A table sits between ``<!-- flags: SCRIPT -->`` and ``<!-- /flags -->``; one table per argument group, one row per
flag: its spellings (aliases after the first), its default and its help. Flags hidden from ``--help`` and
torchvision's ignored flags (default ``SUPPRESS``, described in the README's prose) are left out.
"""

import argparse
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCRIPTS = ("train", "cascade_evaluation")
BLOCK = re.compile(r"(<!-- flags: (\w+)\.py -->\n)(.*?)(<!-- /flags -->)", re.DOTALL)
MAX_LISTED_CHOICES = 6


def default_text(action: argparse.Action) -> str:
    """The default as a user types it: lists space-separated, off for switches, none for no value."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if action.default is False else "on"
    value = action.default
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return '""' if value == "" else str(value)


def help_text(action: argparse.Action) -> str:
    text = (action.help or "").replace("|", "\\|")
    if action.choices is not None and len(action.choices) <= MAX_LISTED_CHOICES:
        text += f" (one of: {', '.join(str(c) for c in action.choices)})"
    return text


def flags_table(parser: argparse.ArgumentParser) -> str:
    """Markdown tables of every argument group of ``parser`` that has visible flags."""
    parts = []
    for group in parser._action_groups:
        rows = [
            action for action in group._group_actions
            if action.option_strings and argparse.SUPPRESS not in (action.help, action.default)
            and not isinstance(action, argparse._HelpAction)
        ]
        if not rows:
            continue
        title = "other options" if group.title == "options" else group.title
        lines = [f"**{title}**", "", "| flag | default | meaning |", "|---|---|---|"]
        for action in rows:
            spellings = ", ".join(f"`{flag}`" for flag in action.option_strings)
            lines.append(f"| {spellings} | `{default_text(action)}` | {help_text(action)} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def render(readme: str) -> str:
    """``readme`` with every marked table regenerated from its script's ``get_args_parser()``."""
    def table(match: re.Match) -> str:
        script = match.group(2)
        if script not in SCRIPTS:
            raise ValueError(f"README marks flags of {script}.py; scripts/readme_flags.py knows {SCRIPTS}")
        parser = importlib.import_module(script).get_args_parser()
        return match.group(1) + flags_table(parser) + match.group(4)

    return BLOCK.sub(table, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the README is up to date")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    current = README.read_text()
    updated = render(current)
    if args.check:
        if updated != current:
            print("README.md flag tables differ from the parsers: run python scripts/readme_flags.py")
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
