"""`spanet2 scan` and `spanet2 lumi`: κλ constraints (PL and CLs) and luminosity scans from an event store."""

from __future__ import annotations

import argparse

__all__ = ["ORDER", "register"]

ORDER = 60


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="scan configuration YAML (configs/scan/*.yaml)")
    parser.add_argument("--output", help="output folder (default: the config's `output`)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="Dask: 'local' (default: a LocalCluster, one worker per core, dashboard on "
        "127.0.0.1), 'synchronous' (in this process), or a scheduler address / file",
    )
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes")
    parser.add_argument(
        "--seed", type=int, default=None, help="recorded in the provenance (the scan is deterministic)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG/PDF plots")


def register(subparsers) -> None:
    scan = subparsers.add_parser(
        "scan",
        help="expected κλ intervals (profile likelihood and CLs) per method and luminosity",
        description="Read the Zarr event store once, build m_HH templates for each method's selection, scan the "
        "κλ grid on Dask (finished points are appended to points.jsonl; a rerun computes only the "
        "missing ones), refine every crossing, and print the intervals as Markdown. Writes "
        "results.json, tables.md, provenance.json and plots into the output folder.",
    )
    _common(scan)
    scan.add_argument("--workspace", metavar="DIR", help="write the pyhf JSON workspace per method, L and κλ")
    scan.add_argument(
        "--workspace-kappa",
        type=float,
        action="append",
        metavar="K",
        help="κλ of the written workspaces (repeatable; default 1)",
    )
    scan.set_defaults(handler=_scan)
    lumi = subparsers.add_parser(
        "lumi",
        help="Δκλ vs luminosity and the equivalent luminosity between methods",
        description="Intervals of every method at each luminosity of `lumi_scan` (Δκλ vs L plot), and, with "
        "`equivalent_luminosity: {reference: METHOD}`, the L′ at which each other method reaches the "
        "reference's Δκλ (and each bound) at the configured luminosities.",
    )
    _common(lumi)
    lumi.set_defaults(handler=_lumi)


def _load(args):
    from spanet2.stats.config import load_scan_config

    overrides = {"seed": args.seed}
    return load_scan_config(args.config, **overrides)


def _check_workers(args) -> None:
    from spanet2.events.errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers", None, f"expected a positive number of workers, got {args.workers}")


def _scan(args) -> int:
    from spanet2.stats.scan import format_equivalent_table, format_interval_table, run_scan

    _check_workers(args)
    config = _load(args)
    result = run_scan(
        config,
        output=args.output,
        scheduler=args.scheduler,
        n_workers=args.workers,
        workspace_dir=args.workspace,
        workspace_kappas=tuple(args.workspace_kappa or (1.0,)),
        plots=not args.no_plots,
    )
    print(format_interval_table(result))
    eq = format_equivalent_table(result)
    if eq:
        print()
        print(eq)
    print(
        f"\npoints: {result.computed_points} computed, {result.reused_points} reused; "
        f"results in {result.output_dir}"
    )
    return 0


def _lumi(args) -> int:
    from spanet2.stats.scan import format_equivalent_table, format_interval_table, run_lumi

    _check_workers(args)
    config = _load(args)
    result = run_lumi(
        config, output=args.output, scheduler=args.scheduler, n_workers=args.workers, plots=not args.no_plots
    )
    print(format_interval_table(result))
    eq = format_equivalent_table(result)
    if eq:
        print()
        print(eq)
    print(
        f"\npoints: {result.computed_points} computed, {result.reused_points} reused; "
        f"results in {result.output_dir}"
    )
    return 0
