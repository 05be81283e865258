"""Provenance recorded next to every result: options, git commit, package versions, host, seed, command."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "package_versions", "provenance", "write_provenance"]

_PACKAGES = ("spanet2", "torch", "numpy", "h5py", "zarr", "dask", "pyhf", "optuna", "ray", "deepspeed",
             "scikit-learn", "pythia8mc", "fastjet", "uproot")


def git_commit() -> str | None:
    """The commit of the source tree this package runs from (with '-dirty' when modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """A JSON-serialisable record of where and how a result was made; `extra` (options, seed) is merged in."""
    record: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "versions": package_versions(),
        "host": socket.gethostname(),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
    }
    record.update(extra)
    return record


def write_provenance(path: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    record = provenance(**extra)
    Path(path).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record
