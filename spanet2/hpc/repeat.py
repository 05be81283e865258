"""Repeated trainings: n seeds in parallel on Ray, each evaluated on a test file; mean ± std over seeds."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanet2.atomic import atomic_path, check_writable
from spanet2.errors import ConfigError, DataError, InputError
from spanet2.provenance import provenance
from spanet2.training.kinds import get_kind
from spanet2.uncertainty import mean_std_sem

__all__ = ["RepeatResult", "format_repeat_summary", "run_repeats", "summarize_runs", "train_and_evaluate"]

log = logging.getLogger(__name__)

TABLE_ROWS = ("=4", "=5", ">=6", "Total")
TABLE_COLUMNS = ("event_fraction", "event_efficiency", "higgs_efficiency")
EVALUATION = "evaluation.json"  # per seed, next to its run directories; a present one is reused on a rerun


@dataclass
class RepeatResult:
    """`runs`: one dict per finished seed (seed, node_name, run_dir, accuracy, auc, assignment_table);
    `summary`: per metric {"mean", "std", "sem", "n", "values"}, std = sample standard deviation (n - 1),
    sem = std/√n.
    `complete`: False when an array task finished its seed while other seeds are still missing (then
    `summary_path` is not written yet: the task that finishes the last seed writes it)."""

    runs: list[dict[str, Any]]
    summary: dict[str, Any]
    summary_path: Path
    model: str
    complete: bool = True
    n: int = 0


def train_and_evaluate(
    model: str,
    options: Any,
    *,
    seed: int,
    log_dir: str,
    name: str,
    event_file: str | None,
    training_file: str | None,
    validation_file: str | None,
    testing_file: str,
    pairing: str = "min-dr",
) -> dict[str, Any]:
    """One repeat: the SAME training function as `spanet2 train` / `spanet2 dnn train`, then the `test`
    numbers on `testing_file`. Writes `<log_dir>/<name>/evaluation.json` and returns its content."""
    kind = get_kind(model)
    trained = kind.train(
        options,
        log_dir=log_dir,
        name=name,
        event_file=event_file,
        training_file=training_file,
        validation_file=validation_file,
        pairing=pairing,
        seed=seed,
        progress=False,
    )
    numbers = kind.evaluate(trained.run_dir, testing_file, pairing=pairing)
    from spanet2.hpc.cluster import node_identity

    record = {
        "seed": seed,
        **node_identity(),
        "run_dir": str(trained.run_dir),
        "accuracy": numbers.get("accuracy"),
        "auc": numbers.get("auc"),
        "assignment_table": numbers.get("assignment_table"),
        "evaluation": numbers,
    }
    with atomic_path(Path(log_dir) / name / EVALUATION) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def _stats(values: list[float | None]) -> dict[str, Any]:
    """{"mean", "std" (sample), "sem" (std/√n), "n", "values"} over the seeds' finite values."""
    return {**mean_std_sem([v for v in values if v is not None]),
            "values": [None if v is None else float(v) for v in values]}


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof=1) over seeds of ACC, AUC and every cell of the assignment table."""
    summary: dict[str, Any] = {
        "accuracy": _stats([r.get("accuracy") for r in runs]),
        "auc": _stats([r.get("auc") for r in runs]),
    }
    if all(r.get("assignment_table") for r in runs) and runs:
        summary["assignment_table"] = {
            row: {col: _stats([r["assignment_table"][row][col] for r in runs]) for col in TABLE_COLUMNS}
            for row in TABLE_ROWS
            if all(row in r["assignment_table"] for r in runs)
        }
    return summary


def _pm(stat: dict[str, Any], digits: int = 4) -> str:
    if not math.isfinite(stat["mean"]):
        return "n/a"
    std = "n/a" if not math.isfinite(stat["std"]) else f"{stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {std}"


def format_repeat_summary(result: RepeatResult) -> str:
    """Markdown: per-seed ACC/AUC, their mean ± std, and the assignment table as mean ± std."""
    runs, summary = result.runs, result.summary
    lines = [
        f"# {len(runs)} seeds ({result.model}); mean ± sample std (n-1)"
        if result.complete
        else f"# {len(runs)} of {result.n} seeds finished so far ({result.model}); mean ± sample std (n-1)",
        "",
        "| seed | ACC | AUC | node | run |",
        "|---:|---:|---:|---|---|",
    ]
    for run in runs:
        acc = "n/a" if run.get("accuracy") is None else f"{run['accuracy']:.4f}"
        auc = "n/a" if run.get("auc") is None else f"{run['auc']:.4f}"
        lines.append(f"| {run['seed']} | {acc} | {auc} | {run.get('node_name', '')} | {run['run_dir']} |")
    lines += [
        "",
        "| | ACC | AUC |",
        "|---|---:|---:|",
        f"| mean ± std | {_pm(summary['accuracy'])} | {_pm(summary['auc'])} |",
    ]
    if "assignment_table" in summary:
        lines += [
            "",
            "| N_jet | Event fraction | Event efficiency | Higgs efficiency |",
            "|---|---:|---:|---:|",
        ]
        for row, cells in summary["assignment_table"].items():
            lines.append(f"| {row} | " + " | ".join(_pm(cells[c], 3) for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def _load_options(model: str, path: str | os.PathLike, epochs: int | None, gpus_per_run: float) -> Any:
    kind = get_kind(model)
    options = kind.load_options(path)
    changes: dict[str, Any] = {kind.gpu_option: 1 if gpus_per_run > 0 else 0} if kind.gpu_option else {}
    if epochs is not None:
        if epochs < 1:
            raise InputError("--epochs", None, f"must be >= 1, got {epochs}")
        changes["epochs"] = epochs
    return options.replace(**changes)


def _existing(path: str | None, key: str, options_file: object) -> str | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise DataError(options_file, key, f"file not found: {path}")
    return str(Path(path).resolve())


def run_repeats(
    options_file: str | os.PathLike,
    *,
    n: int = 10,
    log_dir: str | os.PathLike = "runs/repeat",
    name: str = "repeat",
    event_file: str | None = None,
    training_file: str | None = None,
    validation_file: str | None = None,
    testing_file: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
    model: str = "spanet2",
    pairing: str = "min-dr",
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    num_cpus: int | None = None,
    task_index: int | None = None,
) -> RepeatResult:
    """Train seeds `seed .. seed+n-1` in parallel (one Ray task each) and evaluate each on `testing_file`.

    Runs go to `<log_dir>/<name>/seed_<s>/version_<k>/`; a seed whose `evaluation.json` exists is not
    retrained (rerun the same command to finish an interrupted set). The summary (per-seed numbers, mean,
    std, provenance) is written to `<log_dir>/<name>/repeat.json`. Epochs: the options' own, unless `epochs`.
    `task_index` (a SLURM array task): train only seed `seed + task_index`, in this process, without Ray;
    the summary is written by whichever task finds all n seeds finished.
    """
    if n < 1:
        raise InputError("-n", None, f"the number of seeds must be >= 1, got {n}")
    if task_index is not None and not 0 <= task_index < n:
        raise InputError("--task-index", None, f"must lie in 0..{n - 1} (n = {n}), got {task_index}")
    kind = get_kind(model)
    if cpus_per_run < 0 or gpus_per_run < 0 or (cpus_per_run == 0 and gpus_per_run == 0):
        raise InputError("--cpus-per-run", None, "need cpus >= 0, gpus >= 0, not both 0")
    options = _load_options(model, options_file, epochs, gpus_per_run)
    event_file = (
        _existing(event_file or getattr(options, "event_info_file", None), "event_info_file", options_file)
        if kind.uses_event_file
        else None
    )
    training_file = _existing(
        training_file or getattr(options, "training_file", None), "training_file", options_file
    )
    if not training_file:
        raise ConfigError(
            options_file, "training_file", "no training file (set it in the options or pass -tf)"
        )
    validation_file = _existing(
        validation_file or getattr(options, "validation_file", None) or None, "validation_file", options_file
    )
    testing_file = _existing(
        testing_file or getattr(options, "testing_file", None), "testing_file", options_file
    )
    if not testing_file:
        raise ConfigError(
            options_file, "testing_file", "no testing file (set it in the options or pass --testing_file)"
        )
    if pairing != "min-dr":
        pairing = str(_existing(pairing, "pairing", "--pairing"))
    base = Path(log_dir).resolve() / name
    summary_path = base / "repeat.json"
    check_writable(summary_path)
    seeds = [seed + i for i in range(n)]

    # what every seed's train_and_evaluate gets besides model, options and seed
    job = {
        "log_dir": str(base),
        "event_file": event_file,
        "training_file": training_file,
        "validation_file": validation_file,
        "testing_file": testing_file,
        "pairing": pairing,
    }
    done = _finished_seeds(base, seeds)
    for s in done:
        log.info("seed %d: reusing %s", s, base / f"seed_{s}" / EVALUATION)
    todo = [s for s in seeds if s not in done]
    if task_index is not None:
        mine = seed + task_index
        if mine in todo:
            log.info("array task %d: seed %d in this process (no Ray)", task_index, mine)
            train_and_evaluate(model, options, seed=mine, name=f"seed_{mine}", **job)
        # with the other tasks' seeds finished meanwhile (each task writes its evaluation.json before looking)
        done = _finished_seeds(base, seeds)
        if len(done) < n:
            runs = [done[s] for s in seeds if s in done]
            return RepeatResult(
                runs=runs,
                summary=summarize_runs(runs),
                summary_path=summary_path,
                model=model,
                complete=False,
                n=n,
            )
    elif todo:
        done.update(
            _run_on_ray(
                todo,
                model=model,
                options=options,
                job=job,
                address=address,
                cpus_per_run=cpus_per_run,
                gpus_per_run=gpus_per_run,
                num_cpus=num_cpus,
            )
        )
    runs = [done[s] for s in seeds]
    summary = summarize_runs(runs)
    record = {
        "model": model,
        "options_file": str(options_file),
        "testing_file": testing_file,
        "seeds": seeds,
        "runs": [{k: v for k, v in r.items() if k != "evaluation"} for r in runs],
        "summary": summary,
        "provenance": provenance(options=options.to_dict()),
    }
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return RepeatResult(runs=runs, summary=summary, summary_path=summary_path, model=model, n=n)


def _finished_seeds(base: Path, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """{seed: its evaluation.json} for the seeds that have one under `base`."""
    paths = {s: base / f"seed_{s}" / EVALUATION for s in seeds}
    return {s: json.loads(p.read_text()) for s, p in paths.items() if p.is_file()}


def _run_on_ray(
    seeds: list[int],
    *,
    model: str,
    options: Any,
    job: dict[str, Any],
    address,
    cpus_per_run,
    gpus_per_run,
    num_cpus,
) -> dict[int, dict[str, Any]]:
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from spanet2.hpc.cluster import ray_session

    results: dict[int, dict[str, Any]] = {}
    with ray_session(address, num_cpus=num_cpus) as session:
        log.info(
            "repeat: %d seeds on Ray %s (dashboard %s)", len(seeds), session.address, session.dashboard_url
        )
        # max_retries: a seed whose node died runs again elsewhere (errors in training are not retried)
        remote = ray.remote(train_and_evaluate).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=2
        )
        pending = {remote.remote(model, options, seed=s, name=f"seed_{s}", **job): s for s in seeds}
        with Progress(
            TextColumn("[bold]repeat[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
        ) as progress:
            task = progress.add_task("", total=len(seeds))
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                seed = pending.pop(ready[0])
                try:
                    results[seed] = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), InputError) else None
                    if cause is not None:
                        raise cause from None
                    raise
                run = results[seed]
                progress.update(
                    task,
                    advance=1,
                    description=f"seed {seed}: ACC {run.get('accuracy')} AUC {run.get('auc')}",
                )
    return results
