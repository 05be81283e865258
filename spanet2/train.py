"""`python -m spanet2.train`: Train SPANet2, with the same flags as `spanet2 train`."""

from __future__ import annotations

import sys

from spanet2.cli.training import add_train_arguments, module_main, run_train

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return module_main(add_train_arguments, run_train, "train", argv)


if __name__ == "__main__":
    sys.exit(main())
