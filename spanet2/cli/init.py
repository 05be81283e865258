"""`spanet2 init DIR`: write the shipped configs/ and slurm/ folders into DIR (a new user's starting point)."""

from __future__ import annotations

import argparse

__all__ = ["ORDER", "register"]

ORDER = 5


def _init(args: argparse.Namespace) -> int:
    from spanet2.bundle import write_bundle

    written = write_bundle(args.directory, overwrite=args.force)
    folders = sorted({p.parts[0] for p in written})
    print(
        f"wrote {len(written)} files to {args.directory}: "
        + ", ".join(f"{args.directory}/{f}/" for f in folders)
    )
    print(f"next: cd {args.directory} && spanet2 validate configs/events/hh4b.yaml FILE.h5")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init",
        help="write the example configs/ and slurm/ folders into a directory",
        description="Copy the configurations shipped with spanet2 (configs/events, options, scan, study, tune) "
        "and the SLURM batch scripts (slurm/) into DIRECTORY, so that the README's commands run there.",
    )
    p.add_argument("directory", help="where to write configs/ and slurm/ (created if missing)")
    p.add_argument(
        "--force", action="store_true", help="replace existing DIRECTORY/configs and DIRECTORY/slurm"
    )
    p.set_defaults(handler=_init)
