"""What the entry points share: how they answer bad input.

``train.py``, ``sample.py``, ``evaluate.py``, ``app.py``, ``python -m priorpaint.convert`` and
``data_prep/make_masks.py``/``export_digits.py`` wrap their work in :func:`report_user_errors`:
an input the user can fix ends in ONE line on stderr (``prog: error: <what, where, what to
do>``) and exit status 2; anything else is a bug and keeps its traceback. Light on imports
(no torch) so that ``--help`` and ``--cfg job`` stay fast.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterable

__all__ = ["UserError", "USER_ERRORS", "report_user_errors", "one_line", "check_missing_keys"]


class UserError(ValueError):
    """Bad input the user can fix; the message names the file, key or shape and what to do.

    A ValueError, because priorpaint's convention (kept by every module) is that ValueError
    means bad input: callers that catch ValueError keep working.
    """


# What counts as a user error, in one place: priorpaint raises ValueError (UserError) for bad
# values and these OSErrors for paths; a missing metric weight file is MetricUnavailable (added
# by evaluate.py). Everything else (RuntimeError, TypeError, KeyError, ...) is a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
    PermissionError)
TRACEBACK_ENV = "PRIORPAINT_TRACEBACK"   # =1: let user errors show their traceback too


def one_line(error: BaseException) -> str:
    """The message on one line: multi-line diagnoses (the converter's) joined with '; '."""
    parts = [p.strip() for p in str(error).splitlines() if p.strip()]
    text = ""
    for part in parts:
        part = re.sub(r"^- ", "", part)
        text += part if not text else (" " if text.endswith(":") else "; ") + part
    return text or type(error).__name__


def report_user_errors(prog: str, extra: Iterable[type[BaseException]] = (),
                       returns_status: bool = False) -> Callable:
    """Decorator for an entry point's main: user errors -> one stderr line and exit status 2.

    ``extra`` adds exception types that are user errors for this entry point only.
    ``returns_status``: main returns its exit status (``raise SystemExit(main(argv))``), so
    the wrapper returns 2 rather than raising SystemExit(2). Set ``PRIORPAINT_TRACEBACK=1`` to
    see the traceback of a user error as well.
    """
    caught = USER_ERRORS + tuple(extra)

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except caught as error:
                if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                    raise
                print(f"{prog}: error: {one_line(error)}", file=sys.stderr, flush=True)
                if returns_status:
                    return 2
                raise SystemExit(2) from None
        return wrapper

    return decorate


def check_missing_keys(cfg) -> None:
    """A Hydra config's ``???`` values, named before anything is built."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{', '.join(missing)} must be given: add "
                        + " ".join(f"{key}=..." for key in missing) + " to the command line")
