"""`spanet2 <command>`: parses, loads, calls one library function, writes. No logic here.

Each module of this package that defines `register(subparsers)` adds its commands; a command module
sets `ORDER` (an int) to place itself in `--help`. A command's handler returns an exit code (or None).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

from spanet2 import __version__
from spanet2.cli._argparse import Parser
from spanet2.cli._smoke import apply_smoke_caps
from spanet2.errors import InputError

__all__ = ["build_parser", "main", "run_guarded"]


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> Parser:
    parser = Parser(
        prog="spanet2",
        description="SPANet2: symmetry-preserving attention networks for HH -> bbbb jet assignment, "
        "event classification and kappa_lambda constraints.",
    )
    parser.add_argument("--version", action="version", version=f"spanet2 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        mod.register(sub)
    return parser


def run_guarded(func, *args, **kwargs) -> int:
    """Run a command handler; a user mistake (InputError) becomes one line on stderr and exit code 2."""
    try:
        rc = func(*args, **kwargs)
    except InputError as exc:
        print(f"spanet2: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spanet2: interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else int(rc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # the distributed / Ray / matplotlib chatter stays out of the user's terminal
        for noisy in ("distributed", "matplotlib", "ray", "filelock", "urllib3", "asyncio", "numexpr"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    apply_smoke_caps(args)
    return run_guarded(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
