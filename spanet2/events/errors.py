"""Compatibility alias: the error family lives on the ground floor, `spanet2.errors`."""

from spanet2.errors import ConfigError, DataError, InputError

__all__ = ["InputError", "ConfigError", "DataError"]
