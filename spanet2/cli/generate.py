"""`spanet2 generate signal|background|sets` and `spanet2 pair`: the embedded event source on the command line."""

from __future__ import annotations

import argparse
import json

from spanet2.cli._argparse import add_no_progress

__all__ = ["ORDER", "register"]

ORDER = 20
_STUDY = "-5,-3,-1,1,2,3,5,7,9,12"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sqrt-s", type=float, default=13.0, help="collider energy in TeV (default 13)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same file (default 0)")
    p.add_argument(
        "--shower",
        choices=("fast", "pythia"),
        default="fast",
        help="fast: parametrised detector; pythia: Pythia8 + fastjet (needs the [pythia] extra)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (the file does not depend on it)")
    p.add_argument("--max-jets", type=int, default=10, help="jets kept per event, pT-ordered (default 10)")
    add_no_progress(p)


def _background_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--background-model",
        choices=("exact", "approx"),
        default="exact",
        help="QCD 4b partons: exact = every LO 2->4 tree diagram at full colour (pyAmpliCol, the [exact] "
        "extra; default); approx = LO 2->2 with collinear g->bb / b->bg splittings (faster, for comparison)",
    )


def _sigma_line(samples: list[dict]) -> str:
    """'σ(generator cuts) = X ± E fb (model)' of the background sample, for the command's summary."""
    info = next((s for s in samples if s.get("process") == "background"), None)
    if not info or "sigma_generator_cuts_fb" not in info:
        return ""
    err = info.get("sigma_generator_cuts_err_fb")
    sigma = f"{info['sigma_generator_cuts_fb']:.5g}" + (f" ± {err:.2g}" if err is not None else "")
    return f"; QCD 4b σ(generator cuts) = {sigma} fb ({info['background_model']})"


def _run_options(args) -> dict:
    """The flags every `generate` subcommand shares, as keyword arguments of the writer functions."""
    extra = {"background_model": args.background_model} if hasattr(args, "background_model") else {}
    return {
        **extra,
        "sqrt_s_tev": args.sqrt_s,
        "seed": args.seed,
        "shower": args.shower,
        "workers": args.workers,
        "max_jets": args.max_jets,
        "show_progress": not args.no_progress,
    }


def _signal(args) -> int:
    from spanet2.generate.writer import generate_signal_file

    attrs = generate_signal_file(
        args.output,
        kappas=args.kappa,
        events_per_kappa=args.events_per_kappa,
        **_run_options(args),
    )
    print(f"{args.output}: signal σ×BR×eff = {attrs['cross_section_fb']:.6g} fb")
    return 0


def _background(args) -> int:
    from spanet2.generate.writer import generate_background_file

    attrs = generate_background_file(
        args.output,
        n_events=args.events,
        kappa_inputs=args.kappa_input,
        **_run_options(args),
    )
    samples = json.loads(attrs["samples"])
    print(
        f"{args.output}: QCD 4b σ×eff = {attrs['cross_section_fb']:.6g} fb "
        f"(four-tag pass rate {samples[0]['efficiency']:.4g}){_sigma_line(samples)}"
    )
    return 0


def _sets(args) -> int:
    from spanet2.generate.writer import generate_sets

    written = generate_sets(
        args.output_dir,
        kappas=args.kappa,
        signal_per_kappa=args.signal_per_kappa,
        n_background=args.background,
        test_fraction=args.test_fraction,
        **_run_options(args),
    )
    for name, attrs in written.items():
        print(
            f"{args.output_dir}/{name}: signal {attrs['signal_cross_section_fb']:.6g} fb, "
            f"background {attrs['background_cross_section_fb']:.6g} fb"
        )
    print(_sigma_line(json.loads(next(iter(written.values()))["samples"])).lstrip("; ") or "no background")
    return 0


def _pair(args) -> int:
    from spanet2.physics.pairing import pair_file

    n = pair_file(args.input, args.output)
    print(f"{args.output}: min-ΔR pairing of {n} events")
    return 0


def register(subparsers) -> None:
    gen = subparsers.add_parser(
        "generate",
        help="generate HH -> 4b signal / QCD 4b background HDF5 files",
        description="Embedded event source: LO gg->HH (exact top loops) or QCD pp->4b (exact LO tree matrix "
        "elements by default), a detector back end (fast or Pythia8), the four-tag cut, truth matching; "
        "writes SPANet HDF5 files.",
    )
    gen.set_defaults(handler=lambda args: gen.print_help() or 2)
    sub = gen.add_subparsers(dest="process", metavar="PROCESS")

    sig = sub.add_parser(
        "signal",
        help="gg -> HH -> 4b at a list of kappa_lambda points",
        description="N events passing the four-tag cut per kappa_lambda point, in one file.",
    )
    sig.add_argument("--kappa", default=_STUDY, help=f"comma-separated kappa_lambda list (default {_STUDY})")
    sig.add_argument("--events-per-kappa", type=int, required=True, help="selected events per kappa_lambda")
    sig.add_argument("--output", required=True, help="output HDF5 file")
    _common(sig)
    sig.set_defaults(handler=_signal, smoke_caps={"events_per_kappa": 50})

    bkg = sub.add_parser(
        "background",
        help="QCD pp -> bbbb background",
        description="N QCD 4b events passing the four-tag cut; kappa_lambda input drawn at random.",
    )
    bkg.add_argument("--events", type=int, required=True, help="selected events")
    bkg.add_argument(
        "--kappa-input", default=_STUDY, help=f"kappa_lambda values to draw from (default {_STUDY})"
    )
    bkg.add_argument("--output", required=True, help="output HDF5 file")
    _common(bkg)
    _background_option(bkg)
    bkg.set_defaults(handler=_background, smoke_caps={"events": 300})

    sets = sub.add_parser(
        "sets",
        help="the study's four files (assignment/classification x train/test)",
        description="assignment_{train,test}.h5 (signal) and classification_{train,test}.h5 "
        "(signal + background, shuffled), about 90 %% / 10 %% train/test.",
    )
    sets.add_argument("--kappa", default=_STUDY, help=f"comma-separated kappa_lambda list (default {_STUDY})")
    sets.add_argument("--signal-per-kappa", type=int, required=True, help="selected signal events per point")
    sets.add_argument("--background", type=int, required=True, help="selected background events")
    sets.add_argument("--test-fraction", type=float, default=0.1, help="fraction in the test files (0.1)")
    sets.add_argument("--output-dir", required=True, help="output folder")
    _common(sets)
    _background_option(sets)
    sets.set_defaults(handler=_sets, smoke_caps={"signal_per_kappa": 50, "background": 300})

    pair = subparsers.add_parser(
        "pair",
        help="min-dR pairing of an HDF5 file's jets",
        description="Copy IN.h5 to OUT.h5 with TARGETS replaced by the min-dR pairing.",
    )
    pair.add_argument("input", help="SPANet HDF5 file")
    pair.add_argument("output", help="output HDF5 file")
    pair.set_defaults(handler=_pair)
