"""The benchmarks' command lines: ``key=value`` words over a dict of defaults.

Why not argparse: the scripts take the same ``key=value`` form as ``train.py`` and ``sample.py``
(Hydra's), so a command copied from one to the other reads alike, and a study's options
print back as the command that produced them. A bad word is a user error: one line on
stderr naming it and the keys there are, exit status 2 (the project's rule), no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import NoReturn

__all__ = ["key_value_options", "usage_error"]


def usage_error(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr and exit with status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def key_value_options(argv: Iterable[str], defaults: Mapping[str, object], prog: str) -> dict:
    """``defaults`` updated by each ``key=value`` word of ``argv``; values stay strings (the
    caller converts them). A word without ``=`` or with an unknown key ends the command."""
    options = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            usage_error(prog, f"expected key=value with key in {', '.join(defaults)}; got {arg!r}")
        options[key] = value
    return options
