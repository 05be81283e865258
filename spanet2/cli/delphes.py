"""`spanet2 convert-delphes IN.root OUT.h5`: a Delphes ROOT file to the SPANet HDF5 layout."""

from __future__ import annotations

import argparse
import sys

from spanet2.cli._argparse import add_no_progress

__all__ = ["ORDER", "register"]

ORDER = 25
_STUDY = "-5,-3,-1,1,2,3,5,7,9,12"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert-delphes",
        help="Delphes ROOT file -> SPANet HDF5 (jets, truth matching, four-tag cut)",
        description="Read the Delphes tree (Jet, MissingET, Electron, Muon, Particle) chunk by chunk with uproot, "
        "find the b quarks of the Higgs decays, match jets (dR < 0.4), apply the four-tag cut and write the "
        "generator's HDF5 layout (INPUTS, TARGETS, CLASSIFICATIONS, WEIGHTS/weight, TRUTH, GLOBAL_EXTRA). "
        "Written under a temporary name, renamed when complete.",
    )
    p.add_argument("input", help="Delphes ROOT file (tree 'Delphes')")
    p.add_argument("output", help="output HDF5 file")
    p.add_argument(
        "--kappa-input",
        default=_STUDY,
        help=f"kappa_lambda values the network input is drawn from per event (default {_STUDY}); "
        "one value = a fixed input",
    )
    p.add_argument(
        "--kappa",
        type=float,
        default=None,
        help="generated kappa_lambda of a one-point signal file: the input of its signal events "
        "and TRUTH/kappa",
    )
    p.add_argument(
        "--cross-section-fb",
        type=float,
        default=None,
        help="the file's cross section before selection (fb); weights = it / events read "
        "(default: 1 / events read)",
    )
    p.add_argument(
        "--process",
        choices=("auto", "signal", "background"),
        default="auto",
        help="auto: signal = events with two H -> bb decays in Particle (default)",
    )
    p.add_argument(
        "--sqrt-s", type=float, default=None, help="collider energy in TeV (stored as an attribute)"
    )
    p.add_argument("--max-jets", type=int, default=10, help="jets kept per event, pT-ordered (default 10)")
    p.add_argument("--step-size", type=int, default=10_000, help="events read per chunk (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kappa_lambda input draw (default 0)")
    add_no_progress(p)
    p.set_defaults(handler=_convert_delphes)


def _convert_delphes(args: argparse.Namespace) -> int:
    from spanet2.errors import InputError
    from spanet2.generate.delphes import convert_delphes, count_events
    from spanet2.generate.writer import parse_kappa_list

    if args.step_size < 1:
        raise InputError("--step-size", None, f"expected a positive integer, got {args.step_size}")
    kappas = parse_kappa_list(args.kappa_input, flag="--kappa-input")
    options = dict(
        kappa_inputs=kappas,
        seed=args.seed,
        kappa=args.kappa,
        cross_section_fb=args.cross_section_fb,
        sqrt_s_tev=args.sqrt_s,
        process=args.process,
        max_jets=args.max_jets,
        step_size=args.step_size,
    )
    if args.no_progress or not sys.stderr.isatty():
        attrs = convert_delphes(args.input, args.output, **options)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("reading Delphes events", total=count_events(args.input))
            attrs = convert_delphes(
                args.input, args.output, progress=lambda n: bar.advance(task, n), **options
            )
    print(
        f"{args.output}: {attrs['n_selected']} of {attrs['n_read']} events pass the four-tag cut "
        f"({attrs['n_signal_read']} signal read)"
    )
    return 0
