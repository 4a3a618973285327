"""Reading weight files and hashing them: the leaf under ``checkpoint`` and ``diffusers_prior``.

Both a priorpaint checkpoint and a diffusers folder's ``.bin`` are torch files, a diffusers
folder may hold ``.safetensors`` instead, and a run records a digest of whatever it loaded.
Keeping that here, with no import of either loader, is what lets ``checkpoint`` import
``diffusers_prior`` and not the other way round (diffusers' own ``load_state_dict`` is such a
leaf).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch

from .cli import UserError

__all__ = ["load_file", "load_torch_file", "torch_file_problem", "sha256_of_file",
           "sha256_of_files", "LEGACY_MAGIC"]

# what a legacy (pre-1.6, non-zip) torch.save file starts with: its pickled magic number
LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
_CHUNK = 1 << 20


def load_file(path, map_location="cpu", *, trusted: bool = False, what: str = "checkpoint"):
    """The object a weights file holds: ``.safetensors`` without pickle, else ``torch.load``.

    torch files load weights-only unless ``trusted`` (see :func:`load_torch_file`); a missing
    file is a FileNotFoundError naming ``what``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return load_torch_file(path, map_location, trusted=trusted, what=what)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors
    except ImportError as e:   # an optional extra: only needed when such a file is read
        raise ImportError("reading .safetensors needs the safetensors package: pip install "
                          "'priorpaint[diffusers]'") from e
    try:
        return load_safetensors(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e


def load_torch_file(path, map_location="cpu", *, trusted: bool = False,
                    what: str = "checkpoint", mmap: bool = False):
    """``torch.load`` that tells a broken file from a real one holding pickled objects.

    torch answers a truncated or foreign file with whatever its parser trips on (OSError
    [Errno 22], KeyError, "Unsupported operand", ...), and a sound file with objects in it
    with the same UnpicklingError as some broken ones. So on failure the file's structure is
    checked: only a complete torch file whose pickle names a global is worth ``trusted=True``.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted,
                          mmap=mmap and not _is_legacy(path))
    except MemoryError:
        raise
    except Exception as e:   # any parser failure: say what the file is, not where torch tripped
        broken = torch_file_problem(path)
        if broken:
            raise UserError(f"{path} is not a complete {what}: corrupt, truncated or another "
                            f"format ({broken}); re-download or re-save it") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            name = str(e).split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in str(e) else "?"
            # a legacy file's tensor bytes follow its pickles unchecked: it may still be cut
            kind = "legacy (pre-1.6) torch file" if _is_legacy(path) else "complete torch file"
            raise UserError(f"{path} is a {kind} that holds pickled objects ({name}) "
                            f"that safe (weights-only) loading refuses; only if you trust its "
                            f"source, load it with priorpaint.checkpoint.load_prior(path, "
                            f"trusted=True)") from e
        raise UserError(f"{path}: torch.load failed: {first}") from e


def _is_legacy(path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC


def torch_file_problem(path) -> str | None:
    """Why ``path`` cannot be a whole torch.save file, or None when its structure is sound.

    Zip format (torch >= 1.6): the central directory sits at the end, so a cut file does not
    open, and the archive must hold a data.pkl. Legacy format: the magic number, then the
    pickles of protocol, sys info, object and storage keys must all parse to their STOP (the
    raw tensor bytes after them are not checked).
    """
    import pickletools
    import zipfile

    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if not any(n.endswith("data.pkl") for n in archive.namelist()):
                    return "a zip archive without data.pkl"
        except (zipfile.BadZipFile, OSError, EOFError):
            return "a zip archive cut short or damaged"
        return None
    if head == LEGACY_MAGIC:
        with open(path, "rb") as f:
            try:
                for _ in range(5):
                    for _op in pickletools.genops(f):
                        pass
            except Exception:   # genops raises ValueError and others on cut or bad data
                return "a legacy torch file cut short or damaged"
        return None
    return "neither a zip nor a legacy torch file"


def sha256_of_file(path) -> str:
    """Hex sha256 of one file's bytes (read in 1 MiB chunks: checkpoints reach gigabytes)."""
    digest = hashlib.sha256()
    _hash_into(digest, Path(path))
    return digest.hexdigest()


def sha256_of_files(root, files: Iterable) -> str:
    """One hex sha256 over several files: each one's path relative to ``root``, a NUL, its bytes.

    The names go in so that renaming or swapping files inside a folder changes the digest.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for file in files:
        file = Path(file)
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        _hash_into(digest, file)
    return digest.hexdigest()


def _hash_into(digest, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
