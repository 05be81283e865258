"""The configs/ and slurm/ folders a user starts from: inside the wheel (spanet2/_bundle/, see setup.py), or the
checkout's own folders in a development install. `write_bundle` is `spanet2 init DIR`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from spanet2.atomic import atomic_path
from spanet2.errors import DataError, InputError

__all__ = ["BUNDLED", "bundle_root", "write_bundle"]

BUNDLED = ("configs", "slurm")


def bundle_root() -> Path:
    """The folder holding configs/ and slurm/: the installed bundle, else the source checkout."""
    package = Path(__file__).resolve().parent
    for root in (package / "_bundle", package.parent):
        if all((root / name).is_dir() for name in BUNDLED):
            return root
    raise DataError(
        package / "_bundle", None, "spanet2 was installed without configs/ and slurm/; reinstall it"
    )


def write_bundle(dest: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Copy configs/ and slurm/ into `dest` (created); returns the files written, relative to `dest`.

    An existing DEST/configs or DEST/slurm is an InputError unless `overwrite`; each folder is written under a
    temporary name and renamed when complete. Scripts keep their executable bit.
    """
    dest = Path(dest)
    root = bundle_root()
    if not overwrite:
        for name in BUNDLED:
            if (dest / name).exists():
                raise InputError(dest / name, None, "already exists; use --force to replace it")
    written = []
    for name in BUNDLED:
        with atomic_path(dest / name, is_dir=True) as tmp:
            shutil.copytree(
                root / name, tmp, ignore=shutil.ignore_patterns("__pycache__", ".*"), dirs_exist_ok=True
            )
            written += sorted(Path(name) / p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
    return written
