"""`spanet2 study CONFIG` (the whole study, resumable) and `spanet2 report DIR` (rewrite the report only)."""

from __future__ import annotations

import argparse

from spanet2.cli._argparse import add_ray_address
from spanet2.cli._smoke import smoke_test_enabled

ORDER = 90


def register(sub: argparse._SubParsersAction) -> None:
    from spanet2.report.study import stage_names

    p = sub.add_parser(
        "study",
        help="run the whole study: data, training, repeats, predictions, store, κλ scans, report",
        description="Run the study of CONFIG stage by stage ("
        + " → ".join(stage_names())
        + "). A stage whose "
        "outputs exist and whose inputs are unchanged is skipped; --from reruns from a stage. Relative file paths "
        "in CONFIG (options, tune configs, event file) name files in the working directory, else spanet2's shipped "
        "configs (configs/options/..., as `spanet2 init` writes them).",
    )
    p.add_argument("config", help="study YAML (configs/study/demo.yaml, configs/study/full.yaml)")
    p.add_argument("--output", default=None, help="output folder (default: the config's `output`)")
    p.add_argument(
        "--from",
        dest="from_stage",
        default=None,
        metavar="STAGE",
        help="rerun this stage and every later one: " + ", ".join(stage_names()),
    )
    p.add_argument(
        "--workers", type=int, default=None, help="CPU workers (default: the config's, else all cores)"
    )
    add_ray_address(p)
    p.add_argument("--seed", type=int, default=None, help="the study's seed (overrides the config's `seed`)")
    p.add_argument("--scheduler", default=None, help="a running Dask scheduler (default: a LocalCluster)")
    p.set_defaults(handler=_study)

    r = sub.add_parser(
        "report",
        help="rewrite report.md / report.html of a finished study folder",
        description="Regenerate the report of a study output folder from its stage results.",
    )
    r.add_argument("study_dir", help="the study's output folder (holding study.yaml)")
    r.set_defaults(handler=_report)


def _study(args: argparse.Namespace) -> int:
    from spanet2.report.study import run_study

    run_study(
        args.config,
        output=args.output,
        from_stage=args.from_stage,
        workers=args.workers,
        ray_address=args.ray_address,
        dask_scheduler=args.scheduler,
        seed=args.seed,
        smoke=smoke_test_enabled(),
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from spanet2.report.study import rewrite_report

    path = rewrite_report(args.study_dir)
    print(f"wrote {path}")
    return 0
