"""`python -m spanet2.test`: Evaluate a SPANet2 run on a test file, with the same flags as `spanet2 test`."""

from __future__ import annotations

import sys

from spanet2.cli.training import add_test_arguments, module_main, run_test

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return module_main(add_test_arguments, run_test, "test", argv)


if __name__ == "__main__":
    sys.exit(main())
