"""Files that are either whole or absent: every checkpoint, run record and PNG goes through here.

A file is written under a hidden temporary name in its own folder (``.<name>.partial``:
listings skip hidden names), flushed to the disk (``fsync``) and renamed onto its final name;
a rename within one folder is atomic, so a kill, a full disk or a power cut leaves either the
previous file or the new one, never one cut short. A write that fails (``ENOSPC``, a read-only
or forbidden folder) removes its temporary file and ends in a :class:`~priorpaint.cli.UserError`
naming the path and the cause, which the entry points print as one line (exit status 2).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .cli import UserError

__all__ = ["atomic_write", "temporary_name", "write_error"]

_ADVICE = {errno.ENOSPC: "free some space or choose another folder",
           errno.EDQUOT: "free some space or choose another folder",
           errno.EACCES: "choose a folder you can write to",
           errno.EPERM: "choose a folder you can write to",
           errno.EROFS: "choose a writable folder"}


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before its rename: hidden, in the same folder (same disk)."""
    return path.with_name(f".{path.name}.partial")


def write_error(path: Path, error: OSError) -> UserError:
    """One line for a write that failed: the path, the system's words for why, what to do."""
    cause = error.strerror or str(error) or type(error).__name__
    advice = _ADVICE.get(error.errno, "check the disk and the folder's permissions")
    return UserError(f"cannot write {path}: {cause}; {advice}")


def atomic_write(path, write_fn: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` by ``write_fn(handle)`` (a binary file) so it is whole or not there.

    The previous file under ``path``, if any, stays until the new one is complete on disk.
    Raises a UserError naming ``path`` when the disk refuses (no space, no permission).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        _discard(tmp)
        raise write_error(path, error) from error
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass
