"""`python -m spanet2.predict`: Write SPANet2 predictions, with the same flags as `spanet2 predict`."""

from __future__ import annotations

import sys

from spanet2.cli.training import add_predict_arguments, module_main, run_predict

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    return module_main(add_predict_arguments, run_predict, "predict", argv)


if __name__ == "__main__":
    sys.exit(main())
