"""`spanet2 scan` and `spanet2 lumi`: κλ constraints (PL and CLs) and luminosity scans from an event store."""

from __future__ import annotations

import argparse

__all__ = ["ORDER", "register"]

ORDER = 60


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="+",
        help="scan configuration YAML(s) (configs/scan/*.yaml); several share one Dask cluster and one "
        "pass over the store",
    )
    parser.add_argument("--output", help="output folder (default: the config's `output`; one config only)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="Dask: 'local' (default: a LocalCluster on 127.0.0.1 with TLS, one worker per core, "
        "dashboard on 127.0.0.1), 'synchronous' (in this process), or a scheduler address / file",
    )
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        default=None,
        help="TLS credentials (ca.pem, cert.pem, key.pem) of the --scheduler, as written by "
        "`python -m spanet2.stats.security DIR` (slurm/scan.sh does this)",
    )
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes")
    parser.add_argument(
        "--seed", type=int, default=None, help="recorded in the provenance (the scan is deterministic)"
    )
    parser.add_argument(
        "--store", default=None, help="the Zarr event store to read (overrides the config's `store`)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG/PDF plots")


def register(subparsers) -> None:
    scan = subparsers.add_parser(
        "scan",
        help="expected κλ intervals (profile likelihood and CLs) per method and luminosity",
        description="Open a Dask cluster, histogram the Zarr event store's chunks on the workers (once for "
        "every config given), build m_HH templates for each method's selection, scan the κλ grid "
        "(finished points are appended to points.jsonl; a rerun computes only the missing ones), refine "
        "every crossing and solve the equivalent luminosities as tasks on the workers, and print the "
        "intervals as Markdown. Writes results.json, tables.md, provenance.json and plots into each "
        "config's output folder.",
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
    scan.add_argument(
        "--patchset",
        metavar="DIR",
        help="write a pyhf PatchSet per method and luminosity: DIR/<method>_L<lumi>/BkgOnly.json + "
        "patchset.json (one patch per κλ of the grid)",
    )
    scan.add_argument(
        "--hepdata-record",
        metavar="insNNNNNNN",
        help="INSPIRE id of the HEPData record, written into each PatchSet's metadata.references "
        "(required with --patchset: pyhf's schema requires it)",
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


def _load(args) -> list:
    from pathlib import Path

    from spanet2.errors import InputError
    from spanet2.stats.config import load_scan_config

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers", None, f"expected a positive number of workers, got {args.workers}")
    if args.output is not None and len(args.config) > 1:
        raise InputError("--output", args.output, "only with one config; each config has its own `output`")
    overrides = {"seed": args.seed, "store": None if args.store is None else str(Path(args.store).resolve())}
    return [load_scan_config(path, **overrides) for path in args.config]


def _print(results) -> None:
    from spanet2.stats.scan import format_equivalent_table, format_interval_table

    for result in results:
        if len(results) > 1:
            print(f"## {result.config.path}\n")
        print(
            format_interval_table(
                result, lumis=list(result.config.lumi_scan) if result.kind == "lumi" else None
            )
        )
        eq = format_equivalent_table(result)
        if eq:
            print()
            print(eq)
        print(
            f"\npoints: {result.computed_points} computed, {result.reused_points} reused; "
            f"results in {result.output_dir}"
        )


def _scan(args) -> int:
    from spanet2.stats.scan import run_scans

    configs = _load(args)
    _print(
        run_scans(
            configs,
            kind="scan",
            outputs=[args.output] * len(configs),
            scheduler=args.scheduler,
            n_workers=args.workers,
            tls_dir=args.tls_dir,
            workspace_dir=args.workspace,
            workspace_kappas=tuple(args.workspace_kappa or (1.0,)),
            patchset_dir=args.patchset,
            hepdata=args.hepdata_record,
            plots=not args.no_plots,
        )
    )
    return 0


def _lumi(args) -> int:
    from spanet2.stats.scan import run_scans

    configs = _load(args)
    _print(
        run_scans(
            configs,
            kind="lumi",
            outputs=[args.output] * len(configs),
            scheduler=args.scheduler,
            n_workers=args.workers,
            tls_dir=args.tls_dir,
            plots=not args.no_plots,
        )
    )
    return 0
