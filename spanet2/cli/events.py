"""`spanet2 inspect | validate | convert`: look at, check and convert event files (HDF5 / Zarr)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "ORDER"]

ORDER = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show an HDF5 event file or Zarr event store",
        description="Print the dataset tree (dtypes, shapes), the jets-per-event histogram, the number of "
        "fully matched particles (2h/1h/0h) and the class balance of an HDF5 file; per-sample columns, "
        "weights and labels of a Zarr event store.",
    )
    p.add_argument("file", help="HDF5 event file or Zarr event store (directory)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(handler=_inspect)

    p = subparsers.add_parser(
        "validate",
        help="check an HDF5 file against an event-file YAML",
        description="Check that DATA_FILE holds every input, target and classification of EVENT_FILE with "
        "consistent shapes and valid contents; print one OK line or one error line (exit 2).",
    )
    p.add_argument("event_file", help="event topology YAML (SPANet format)")
    p.add_argument("data_file", help="HDF5 file in the SPANet layout")
    p.set_defaults(handler=_validate)

    p = subparsers.add_parser(
        "convert",
        help="HDF5 event file -> Zarr event store",
        description="Write the per-event columns label, n_jets, weight (WEIGHTS/weight, else 1.0), "
        "kappa_terms, kappa_input into a Zarr event store, one group per sample (signal/background/"
        "unlabelled by CLASSIFICATIONS/EVENT/signal). Written under a temporary name, renamed when done.",
    )
    p.add_argument("file", help="HDF5 event file")
    p.add_argument("store", help="output Zarr store (directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--chunk-size", type=int, default=262144, help="rows per Zarr chunk (default 262144)")
    p.set_defaults(handler=_convert)


def _inspect(args: argparse.Namespace) -> int:
    from spanet2.events.inspect import format_inspection, inspect_path

    info = inspect_path(args.file)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_inspection(info))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from spanet2.events.hdf5 import validate_file
    from spanet2.events.topology import load_topology

    summary = validate_file(load_topology(args.event_file), args.data_file)
    print(summary.one_line())
    return 0


def _convert(args: argparse.Namespace) -> int:
    from spanet2.errors import InputError
    from spanet2.events.store import convert_hdf5_to_store

    if args.chunk_size < 1:
        raise InputError("--chunk-size", None, f"expected a positive integer, found {args.chunk_size}")
    summary = convert_hdf5_to_store(
        args.file,
        args.store,
        store_chunk=args.chunk_size,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
    )
    print(summary.one_line())
    return 0
