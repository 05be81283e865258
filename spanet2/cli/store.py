"""`spanet2 store build`: the Zarr event store from test files and each method's pairing and score."""

from __future__ import annotations

import argparse

from spanet2.cli._argparse import add_hidden_alias, add_no_progress

__all__ = ["ORDER", "register", "run_store_build", "run_store_plot"]

ORDER = 50

_METHOD_HELP = (
    "NAME=SPEC[,SPEC] (repeatable), one SPEC per input file in input order; SPEC = PAIRING[:SCORES]; "
    "PAIRING = min-dr or a predictions HDF5 (TARGETS/h*/b*, and its signal_probability when SCORES is omitted); "
    "SCORES = an HDF5 with CLASSIFICATIONS/EVENT/signal_probability (e.g. `spanet2 dnn predict`). "
    "Examples: spanet2=pred.h5  min_dr_dnn=min-dr:dnn_scores.h5  spanet2=pred_sig.h5,pred_bkg.h5"
)


def run_store_build(args: argparse.Namespace) -> int:
    from spanet2.report.store_builder import StoreInput, build_store

    inputs = []
    if args.input:
        if args.signal or args.background:
            from spanet2.errors import InputError

            raise InputError("--input", None, "give either --input (split by label) or --signal/--background")
        inputs.append(StoreInput(args.input))
    if args.signal:
        inputs.append(StoreInput(args.signal, "signal"))
    if args.background:
        inputs.append(StoreInput(args.background, "background"))
    summary = build_store(args.output, inputs, args.method or [], sqrt_s_tev=args.sqrt_s,
                          chunk_size=args.chunk_size, overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    per_sample = ", ".join(f"{k} {v} events ({summary['cross_section_fb'][k]:.4g} fb)"
                           for k, v in sorted(summary["events"].items()))  # fmt: skip
    print(f"wrote {summary['output']}: {per_sample}; methods {', '.join(summary['methods'])}")
    return 0


def run_store_plot(args: argparse.Namespace) -> int:
    from spanet2.report.plots import plot_all

    thresholds = {}
    for item in args.threshold or []:
        name, _, value = item.partition("=")
        try:
            thresholds[name] = float(value)
        except ValueError:
            from spanet2.errors import InputError

            raise InputError("--threshold", item, "expected METHOD=VALUE with a number VALUE") from None
    paths = plot_all(args.store, args.output, methods=args.method or None, thresholds=thresholds,
                     lumi_ifb=args.lumi)  # fmt: skip
    for path in paths:
        print(path)
    return 0


def register(subparsers) -> None:
    """Add `store build` and `store plot`."""
    from spanet2.report.store_builder import METHOD_GRAMMAR

    store = subparsers.add_parser("store", help="build the Zarr event store that stats reads",
                                  description="The event store: per-event weights, labels, kappa terms, and per "
                                  "method the score, pairing, m_HH and high-level features.")  # fmt: skip
    sub = store.add_subparsers(dest="store_command", metavar="{build,plot}", required=True)
    p = sub.add_parser(
        "build",
        help="test files + predictions/scores -> events.zarr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=METHOD_GRAMMAR,
        description="Build events.zarr chunk by chunk (memory does not grow with N). "
        "Inputs: --signal and --background files, or one labelled --input file.",
    )
    p.add_argument(
        "--input", default=None, help="one labelled HDF5 (CLASSIFICATIONS/EVENT/signal splits the samples)"
    )
    p.add_argument("--signal", default=None, help="signal test HDF5 (WEIGHTS/weight, WEIGHTS/kappa_terms)")
    p.add_argument("--background", default=None, help="background test HDF5 (WEIGHTS/weight)")
    p.add_argument("--method", action="append", metavar="NAME=PAIRING[:SCORES]", help=_METHOD_HELP)
    p.add_argument("-o", "--output", required=True, help="the Zarr store to write (a directory)")
    sqrt_s = p.add_argument(
        "--sqrt-s", type=float, default=None, help="collider energy in TeV (default: the files' attribute)"
    )
    add_hidden_alias(p, sqrt_s, "--sqrt_s_tev")
    chunk = p.add_argument("--chunk-size", type=int, default=65536, help="events read at a time")
    add_hidden_alias(p, chunk, "--chunk_size")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    add_no_progress(p)
    p.set_defaults(handler=run_store_build)

    p = sub.add_parser(
        "plot",
        help="the note's figures from a store (mass planes, m_HH selected, efficiency vs kappa)",
        description="PNG + PDF: mass_plane_{signal,background}, mhh_selected (score > the S/sqrt(B)-"
        "optimal threshold unless --threshold), pairing_efficiency_vs_kappa (when the store has targets).",
    )
    p.add_argument("store", help="an event store from `spanet2 store build`")
    p.add_argument("-o", "--output", required=True, help="folder for the figures")
    p.add_argument("--method", action="append", help="only these methods (repeatable; default all)")
    p.add_argument(
        "--threshold", action="append", metavar="METHOD=VALUE", help="fixed score threshold of a method"
    )
    p.add_argument("--lumi", type=float, default=300.0, help="integrated luminosity in fb^-1 for the yields")
    p.set_defaults(handler=run_store_plot)
