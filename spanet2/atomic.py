"""Write outputs under a temporary name and rename them into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spanet2.errors import InputError

__all__ = ["atomic_path", "check_writable"]


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (InputError) when the parent folder of `path` cannot be created or written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path, None, f"cannot create the output folder: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(path, None, "the output folder is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to `path`, on failure remove it.

    Works for files and for directories (Zarr stores, log dirs). An existing `path` of the same kind is
    replaced only after the new one is complete; one of the other kind (a folder where a file is written,
    or the reverse) is never deleted: InputError before anything is written.
    """
    final = check_writable(path)
    if final.is_symlink():
        raise InputError(final, None, "is a symbolic link; remove the link or write to its target")
    if final.exists() and final.is_dir() != is_dir:
        found, wanted = ("a folder", "a file") if final.is_dir() else ("a file", "a folder")
        raise InputError(final, None, f"exists as {found}, but the output is {wanted}; choose another path")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        if final.exists() and final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        _remove(tmp)
        raise InputError(final, None, f"cannot replace it: {exc.strerror}") from None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()
