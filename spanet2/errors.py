"""One family of user-facing errors: each names the file and key at fault; the CLI maps them to exit 2."""

from __future__ import annotations

__all__ = ["InputError", "ConfigError", "DataError"]


class InputError(Exception):
    """A user mistake: a bad file, key or value. Printed as one line, exit code 2.

    Parameters
    ----------
    file: the file (or command-line flag) at fault, or None.
    key: the key / dataset path / option inside it, or None.
    message: what was expected and what was found.
    """

    def __init__(self, file: object | None, key: str | None, message: str):
        self.file = None if file is None else str(file)
        self.key = key
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.key:
            where.append(self.key)
        prefix = ": ".join(where)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return " ".join(text.split())  # guaranteed single line


class ConfigError(InputError):
    """A bad configuration file (YAML/JSON options, search spaces, scan configs)."""


class DataError(InputError):
    """A bad data file (HDF5, Zarr, ROOT)."""
