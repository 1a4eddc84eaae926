"""Flags of torchvision's reference scripts that have no meaning here, accepted so that existing launch scripts run.

Each one is parsed, remembered in `args.ignored_flags`, and reported by `warn_ignored` as one warning line, after
the process group exists so that only rank 0 prints it.
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any


def parse_bool(text: str) -> bool:
    """`true/false`, `yes/no`, `1/0` (torchvision's `type=bool` reads "False" as True; this does not)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_ignored(parser: argparse.ArgumentParser, flag: str, reason: str, type: Callable[[str], Any] | None = str,
                refuse: Callable[[Any], str | None] | None = None) -> None:
    """Accept `flag` (with one value of `type`, or none when `type` is None) and ignore it with `reason`.

    `refuse(value)` may return a message: then that value is an error (a setting this script cannot honour).
    """

    class Ignored(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            message = refuse(values) if refuse is not None else None
            if message:
                parser.error(f"{option_string} {values}: {message}")
            shown = option_string if type is None else f"{option_string} {values}"
            namespace.ignored_flags = [*getattr(namespace, "ignored_flags", []), f"{shown}: {reason}"]

    parser.add_argument(flag, action=Ignored, nargs=0 if type is None else None, type=type, default=argparse.SUPPRESS,
                        help=f"accepted for torchvision's scripts and ignored: {reason}")


def warn_ignored(args: argparse.Namespace, script: str) -> None:
    """One stderr line per ignored flag that was given."""
    for line in getattr(args, "ignored_flags", []):
        print(f"{script}: warning: ignoring {line}", file=sys.stderr, flush=True)
