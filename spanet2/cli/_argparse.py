"""The argument parser every `spanet2` command uses: negative values, one-line usage errors, hidden aliases,
and upstream SPANet flags that are refused with a message naming the difference."""

from __future__ import annotations

import argparse
import re
import sys

__all__ = [
    "Parser",
    "add_hidden_alias",
    "add_no_progress",
    "add_ray_address",
    "add_test_file",
    "add_unsupported",
]

# argparse takes "-5,1,5" or "-1e-3" for an option because only "-5" and "-.5" look like numbers to it.
# Any token that starts with a minus and a digit is a value here (no spanet2 option starts with a digit).
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with the house rules: a value may start with a minus (`--kappa -5,1,5` and
    `--kappa=-5,1,5`), and a usage mistake is one line on stderr (`spanet2: error: PROG: ...`), exit 2.
    Subparsers made from it are of the same class."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse's hook
        namespace, extras = super().parse_known_args(args, namespace)
        missing = [
            a for a in getattr(self, "_required_with_alias", ()) if getattr(namespace, a.dest, None) is None
        ]
        if missing:
            self.error(
                f"the following arguments are required: {', '.join('/'.join(a.option_strings) for a in missing)}"
            )
        return namespace, extras

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"spanet2: error: {self.prog}: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)


def add_hidden_alias(parser: argparse.ArgumentParser, action: argparse.Action, *old_spellings: str) -> None:
    """Accept `old_spellings` for `action` without listing them in --help (a renamed flag keeps working)."""
    if action.required:  # argparse would demand the new spelling even when the old one was given
        action.required = False
        if not hasattr(parser, "_required_with_alias"):
            parser._required_with_alias = []
        parser._required_with_alias.append(action)
    kwargs = {"dest": action.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    if action.nargs == 0:  # store_true / store_false / store_const
        kwargs.update(action="store_const", const=action.const)
    else:
        kwargs.update(type=action.type, nargs=action.nargs, choices=action.choices)
        if isinstance(action, argparse._AppendAction):
            kwargs["action"] = "append"
    parser.add_argument(*old_spellings, **kwargs)


_UNSUPPORTED_TITLE = "upstream SPANet flags that spanet2 does not support (each stops with this reason)"


class _Unsupported(argparse.Action):
    def __init__(self, option_strings, dest, difference: str = "", **kwargs):
        self.difference = difference
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{'/'.join(self.option_strings)}: {self.difference}")


def add_unsupported(parser: argparse.ArgumentParser, *flags: str, difference: str, takes_value: bool) -> None:
    """An upstream SPANet flag that spanet2 does not implement: using it stops with `difference` (one line,
    exit 2) instead of doing something else silently. Listed in --help in their own group."""
    group = next((g for g in parser._action_groups if g.title == _UNSUPPORTED_TITLE), None)
    if group is None:
        group = parser.add_argument_group(_UNSUPPORTED_TITLE)
    group.add_argument(
        *flags,
        action=_Unsupported,
        difference=difference,
        nargs="?" if takes_value else 0,
        metavar="X" if takes_value else None,
        default=argparse.SUPPRESS,
        help=difference,
    )


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """`--no-progress` (old spelling `--quiet`): no progress bar. Sets `args.no_progress`."""
    action = parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_hidden_alias(parser, action, "--quiet")


def add_ray_address(parser: argparse.ArgumentParser) -> None:
    """`--ray-address` (old spelling `--address`): a running Ray cluster. Sets `args.ray_address`."""
    action = parser.add_argument(
        "--ray-address", default=None, metavar="ADDRESS",
        help="a running Ray cluster (ip:port or auto; default: RAY_ADDRESS, else a local Ray)",
    )  # fmt: skip
    add_hidden_alias(parser, action, "--address")


def add_test_file(
    parser: argparse.ArgumentParser, help: str, *, required: bool = True, short: bool = True
) -> None:
    """`-tf/--test_file` (upstream's spelling; old spelling `--testing_file`). Sets `args.testing_file`."""
    flags = ("-tf", "--test_file") if short else ("--test_file",)
    action = parser.add_argument(*flags, dest="testing_file", required=required, default=None, metavar="FILE",
                                 help=help)  # fmt: skip
    add_hidden_alias(parser, action, "--testing_file")
