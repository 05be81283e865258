"""The size switch: with SPANET2_SMOKE_TEST=1 in the environment every command does a few seconds' work (event
counts, epochs, trials capped), so that the README's commands run as written in tests and on a laptop."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["SMOKE_ENV", "apply_smoke_caps", "smoke_test_enabled"]

SMOKE_ENV = "SPANET2_SMOKE_TEST"


def smoke_test_enabled() -> bool:
    """True when SPANET2_SMOKE_TEST is set to anything but '', '0', 'false' or 'no'."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def apply_smoke_caps(args: argparse.Namespace) -> None:
    """Cap the values a command declared with `set_defaults(smoke_caps={dest: cap})` (None counts as above the
    cap); each change is one note on stderr, so a smoke run never passes for a real one."""
    if not smoke_test_enabled():
        return
    changed = []
    for dest, cap in getattr(args, "smoke_caps", {}).items():
        value = getattr(args, dest, None)
        if value is None or value > cap:
            setattr(args, dest, cap)
            changed.append(f"{dest}={cap}")
    if changed:
        print(f"spanet2: {SMOKE_ENV} is set: {', '.join(changed)}", file=sys.stderr)
