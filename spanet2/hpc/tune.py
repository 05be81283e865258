"""Hyper-parameter searches: Optuna (TPE) through Ray Tune, ASHA early stopping, resumable, ranked results."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spanet2.atomic import atomic_path, check_writable
from spanet2.errors import ConfigError, DataError, InputError
from spanet2.hpc.search_space import SearchConfig, optuna_space
from spanet2.provenance import write_provenance
from spanet2.training.kinds import get_kind

__all__ = [
    "SearchResult",
    "TrialSpec",
    "format_ranking",
    "has_search_state",
    "prepare_search",
    "read_ledger",
    "run_search",
    "stored_search_config",
    "train_trial",
]

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "search"  # <output>/ray/search holds Tune's experiment state (Tuner.restore reads it)
SEARCH_YAML = "search.yaml"  # the resolved search configuration, written when a search starts
LEDGER = "ledger.jsonl"  # one line per trial start (from the trial) and per finished trial (from the driver)


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs besides its sampled parameters (picklable; absolute paths)."""

    model: str
    base_options: Any  # spanet2.training.options.Options or spanet2.training.dnn.DNNOptions
    overrides: dict[str, Any]
    epochs: int
    event_file: str | None
    training_file: str | None
    validation_file: str | None
    pairing: str
    trials_dir: str
    ledger: str
    seed: int
    engine: str | None
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    objective_metric: str


@dataclass
class SearchResult:
    """Outputs of a search. `ranking` is the Markdown ranked table; counts are over all trials of the search."""

    output_dir: Path
    best_options: Path | None
    trials_csv: Path
    ranking_md: Path
    ranking: str
    n_trials: int
    n_finished: int
    n_errored: int
    interrupted: bool
    best: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- trial side
def _trial_options(spec: TrialSpec, params: dict[str, Any]) -> Any:
    changes = {**spec.overrides, **params, "epochs": spec.epochs}
    gpu_option = get_kind(spec.model).gpu_option
    if gpu_option:
        # Ray accounts for GPUs; the trainer uses one only when the trial was given one.
        changes[gpu_option] = 1 if spec.gpus_per_worker > 0 else 0
    return spec.base_options.replace(**changes)


def _append_ledger(path: str, record: dict[str, Any]) -> None:
    # One short line per write with O_APPEND: concurrent trials on a shared filesystem do not interleave.
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_ledger(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The search's ledger: `{"event": "start"|"complete"|"error", "trial_id", ...}` in write order."""
    path = Path(output_dir) / LEDGER
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = float(value)
    return out


def train_trial(
    spec: TrialSpec, params: dict[str, Any], trial_id: str, report: Callable[[dict], None]
) -> Any:
    """Train one trial with the SAME library function as `spanet2 train` / `spanet2 dnn`; `report` gets every
    epoch's metrics dict. Runs in a Ray worker (or a Ray Train worker for multi-worker trials)."""
    options = _trial_options(spec, params)

    def epoch_callback(metrics: dict[str, Any]) -> None:
        values = _numeric(metrics)
        if spec.objective_metric not in values:
            raise ConfigError(
                "objective",
                spec.objective_metric,
                f"the trainer did not report this metric (it reported {sorted(values)})",
            )
        report(values)

    return get_kind(spec.model).train(
        options,
        log_dir=spec.trials_dir,
        name=trial_id,
        event_file=spec.event_file,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        pairing=spec.pairing,
        seed=spec.seed,
        engine=spec.engine,
        epoch_callback=epoch_callback,
        progress=False,
    )


def _record_start(spec: TrialSpec, params: dict[str, Any], **extra: Any) -> str:
    """Append the trial's "start" line (with its node) to the ledger; return the Tune trial id. A trial
    restarted after a failure (a lost node) gets a second line: the last one says where it finished."""
    from ray import tune

    from spanet2.hpc.cluster import node_identity

    trial_id = tune.get_context().get_trial_id()
    record = {
        "event": "start",
        "trial_id": trial_id,
        "pid": os.getpid(),
        "time": time.time(),
        "params": params,
    }
    _append_ledger(spec.ledger, {**record, **node_identity(), **extra})
    return trial_id


def _tune_trial(params: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune function trainable: one worker, reports through `ray.tune.report`."""
    from ray import tune

    trial_id = _record_start(spec, params, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    train_trial(spec, params, trial_id, tune.report)


def _train_worker_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: every rank trains (DDP / DeepSpeed engine on Ray's process group); all ranks report."""
    import ray.train

    spec: TrialSpec = loop_config["spec"]
    train_trial(spec, loop_config["params"], loop_config["trial_id"], lambda m: ray.train.report(m))


def _distributed_trial(params: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune trainable for a trial with several workers: drives a Ray Train TorchTrainer."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = _record_start(spec, params, workers=spec.workers)
    use_gpu = spec.gpus_per_worker > 0
    resources = {"CPU": spec.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = spec.gpus_per_worker
    trainer = TorchTrainer(
        _train_worker_loop,
        train_loop_config={"params": params, "spec": spec, "trial_id": trial_id},
        scaling_config=ScalingConfig(
            num_workers=spec.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=f"train_{trial_id}",
            storage_path=str(Path(spec.trials_dir) / "_ray_train"),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


# -------------------------------------------------------------------------------------------- driver side
def _progress_callback_class():
    from ray.tune import Callback

    class SearchProgress(Callback):
        """Terminal progress (trials done, best so far) and the 'complete' ledger lines. Picklable: the live
        progress bar is rebuilt in `setup`, so a restored search gets a fresh one."""

        def __init__(self, ledger: str, metric: str, mode: str, total: int):
            self.ledger, self.metric, self.mode, self.total = ledger, metric, mode, total
            self._progress = None
            self._task = None
            self.done = 0
            self.errored = 0
            self.best: float | None = None
            self.best_trial: str | None = None
            self._trial_best: dict[str, float] = {}

        def __getstate__(self):
            state = self.__dict__.copy()
            state["_progress"] = state["_task"] = None
            return state

        def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            previous = read_ledger(Path(self.ledger).parent)
            finished = {r["trial_id"] for r in previous if r["event"] in ("complete", "error")}
            self.done = len(finished)
            for record in previous:
                value = record.get(self.metric)
                if record["event"] == "complete" and value is not None and math.isfinite(value):
                    self._update_best(record["trial_id"], value)
            self._progress = Progress(
                TextColumn("[bold]tune[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(self._describe(), total=self.total, completed=self.done)

        def _describe(self) -> str:
            if self.best is None:
                return "best: -"
            return f"best {self.metric} = {self.best:.5g} ({self.best_trial})"

        def _better(self, a: float, b: float | None) -> bool:
            return b is None or (a < b if self.mode == "min" else a > b)

        def _update_best(self, trial_id: str, value: float) -> None:
            if self._better(value, self.best):
                self.best, self.best_trial = value, trial_id

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(self.metric)
            if value is not None and math.isfinite(value):
                if self._better(value, self._trial_best.get(trial.trial_id)):
                    self._trial_best[trial.trial_id] = value
                self._update_best(trial.trial_id, value)
                if self._progress is not None:
                    self._progress.update(self._task, description=self._describe())

        def _finish(self, trial, event: str) -> None:
            self.done += 1
            value = self._trial_best.get(trial.trial_id)
            record = {
                "event": event,
                "trial_id": trial.trial_id,
                "time": time.time(),
                "epochs": int((trial.last_result or {}).get("training_iteration", 0)),
                self.metric: value,
            }
            _append_ledger(self.ledger, record)
            log.info(
                "trial %s %s (%d/%d): best %s %s; search best %s",
                trial.trial_id,
                event,
                self.done,
                self.total,
                self.metric,
                value,
                self.best,
            )
            if self._progress is not None:
                self._progress.update(self._task, completed=self.done, description=self._describe())

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial, "complete")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.errored += 1
            self._finish(trial, "error")

        def on_experiment_end(self, trials, **info):
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    return SearchProgress


def _resolve(path: str | None, key: str, config_path: str | None, *, must_exist: bool = True) -> str | None:
    if not path:
        return None
    resolved = Path(path).expanduser().resolve()
    if must_exist and not resolved.exists():
        raise DataError(config_path, key, f"file not found: {path}")
    return str(resolved)


def _load_base_options(config: SearchConfig) -> Any:
    kind = get_kind(config.model)
    return kind.load_options(config.options_file) if config.options_file else kind.default_options()


def stored_search_config(output_dir: str | os.PathLike, *, given: SearchConfig | None = None) -> SearchConfig:
    """The search saved in `output_dir/search.yaml` (what `--resume` continues). Settings of `given` that
    differ (e.g. `--epochs` on the resume command line) are ignored with a warning: a search keeps its setup."""
    from spanet2.hpc.search_space import load_search_config

    path = Path(output_dir) / SEARCH_YAML
    if not path.is_file():
        raise InputError(output_dir, "--resume", f"no {SEARCH_YAML} here: not a search folder")
    stored = load_search_config(path)
    if given is not None:
        skip = {"options", "event_file", "training_file", "validation_file", "pairing"}
        old, new = stored.to_dict(), given.to_dict()
        changed = sorted(k for k in old if k not in skip and old[k] != new.get(k))
        if changed:
            log.warning(
                "resuming the search as it was started; ignoring changed settings: %s", ", ".join(changed)
            )
    return stored


def has_search_state(output_dir: str | os.PathLike) -> bool:
    """True when `output_dir` holds a (finished or interrupted) search that `--resume` can continue."""
    return (Path(output_dir) / "ray" / EXPERIMENT_NAME / "tuner.pkl").is_file()


def prepare_search(config: SearchConfig, output_dir: str | os.PathLike, *, resume: bool = False) -> TrialSpec:
    """Validate everything a search needs before any Ray process starts; return the trial spec.

    Raises InputError (ConfigError/DataError) for a missing options/data file, a bad option value produced by
    the space's bounds, an output folder that already holds a search (without `resume`), or nothing to resume.
    """
    output = Path(output_dir)
    has_state = has_search_state(output)
    if resume and not has_state:
        raise InputError(output, "--resume", "no search to resume here (no ray/search/tuner.pkl)")
    if not resume and has_state:
        raise InputError(
            output,
            "--output",
            "already holds a search: pass --resume to continue it, or choose another --output",
        )
    if config.options_file and not Path(config.options_file).is_file():
        raise ConfigError(config.path, "options", f"options file not found: {config.options_file}")
    base = _load_base_options(config)
    # Check the extreme corners of the space build valid options (e.g. hidden_dim vs attention heads).
    for corner in ("low", "high"):
        params = {}
        for p in config.space:
            params[p.name] = (
                (p.values[0] if corner == "low" else p.values[-1])
                if p.kind == "choice"
                else getattr(p, corner)
            )
        try:
            base.replace(**config.overrides, **params, epochs=config.epochs)
        except InputError as exc:
            raise ConfigError(
                config.path,
                f"space.{exc.key}" if exc.key else "space",
                f"gives invalid options at the {corner} end: {exc.message}",
            ) from None
    event_file = config.event_file or getattr(base, "event_info_file", None)
    training_file = config.training_file or getattr(base, "training_file", None)
    validation_file = config.validation_file or getattr(base, "validation_file", None)
    if not training_file:
        raise ConfigError(
            config.path, "training_file", "no training file: set it in the search config or options"
        )
    spec = TrialSpec(
        model=config.model,
        base_options=base,
        overrides=dict(config.overrides),
        epochs=config.epochs,
        event_file=_resolve(event_file, "event_file", config.path) if get_kind(config.model).uses_event_file else None,
        training_file=_resolve(training_file, "training_file", config.path),
        validation_file=_resolve(validation_file, "validation_file", config.path),
        pairing=config.pairing
        if config.pairing == "min-dr"
        else str(_resolve(config.pairing, "pairing", config.path)),
        trials_dir=str((output / "trials").resolve()),
        ledger=str((output / LEDGER).resolve()),
        seed=config.seed,
        engine=config.engine,
        workers=config.workers_per_trial,
        cpus_per_worker=config.cpus_per_trial,
        gpus_per_worker=config.gpus_per_trial,
        objective_metric=config.objective.metric,
    )
    check_writable(output / "trials.csv")  # creates the output folder: only once every input is valid
    return spec


def _trainable(spec: TrialSpec, config: SearchConfig):
    from ray import tune

    if spec.workers > 1:
        # The trial itself is a light coordinator; its Ray Train workers hold the CPUs/GPUs.
        fn = tune.with_parameters(_distributed_trial, spec=spec)
        return tune.with_resources(fn, {"cpu": 0, "memory": 100 * 1024**2})
    fn = tune.with_parameters(_tune_trial, spec=spec)
    resources = {"cpu": config.cpus_per_trial}
    if config.gpus_per_trial > 0:
        resources["gpu"] = config.gpus_per_trial
    return tune.with_resources(fn, resources)


def run_search(
    config: SearchConfig,
    output_dir: str | os.PathLike,
    *,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
) -> SearchResult:
    """Run (or with `resume` continue) the search `config`; write the ranked table, trials CSV, best options.

    Outputs under `output_dir`: `ranking.md`, `trials.csv`, `best_options.json` (ready for `spanet2 train -of`
    or `spanet2 dnn`), `best_trial.json`, `search.yaml` (the resolved config), `provenance.json`,
    `ledger.jsonl`, `trials/<trial_id>/version_0/` (each trial's log dir), `ray/search/` (Tune's state).
    SIGTERM / SIGINT / SIGUSR1 stop the search after saving its state (`interrupted=True`); resume later.
    """
    from spanet2.hpc.cluster import ray_session

    if resume and has_search_state(output_dir):
        config = stored_search_config(output_dir, given=config)
    spec = prepare_search(config, output_dir, resume=resume)  # all input errors before Ray starts
    output = Path(output_dir).resolve()
    (output / "trials").mkdir(parents=True, exist_ok=True)
    if not resume:
        # The resolved search (absolute paths): `--resume` continues exactly this, whatever the CLI says.
        stored = config.replace(
            options_file=str(Path(config.options_file).resolve()) if config.options_file else None,
            event_file=spec.event_file,
            training_file=spec.training_file,
            validation_file=spec.validation_file,
            pairing=spec.pairing,
        )
        with atomic_path(output / SEARCH_YAML) as tmp:
            tmp.write_text(yaml.safe_dump(stored.to_dict(), sort_keys=False))
    write_provenance(output / "provenance.json", search=config.to_dict(), resume=resume)
    # Save Tune's experiment state often: an interrupted search loses at most this much bookkeeping.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    with ray_session(address, num_cpus=num_cpus, num_gpus=None) as session:
        log.info(
            "search %s: %d trials x %d epochs, objective %s (%s); Ray dashboard %s",
            config.path,
            config.num_samples,
            config.epochs,
            config.objective.metric,
            config.objective.mode,
            session.dashboard_url,
        )
        results = _fit(config, spec, output, resume=resume)
    return _write_outputs(config, spec, output, results)


def _fit(config: SearchConfig, spec: TrialSpec, output: Path, *, resume: bool):
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = _trainable(spec, config)
    experiment = output / "ray" / EXPERIMENT_NAME
    previous_term = signal.getsignal(signal.SIGTERM)
    # SLURM preemption / scancel send SIGTERM: turn it into Tune's graceful stop (SIGUSR1 = save state, end).
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGUSR1))
    try:
        if resume:
            tuner = tune.Tuner.restore(
                str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            objective = config.objective
            searcher = OptunaSearch(
                space=optuna_space(config.space),
                metric=objective.metric,
                mode=objective.mode,
                sampler=TPESampler(seed=config.seed),
                points_to_evaluate=[dict(p) for p in config.points_to_evaluate] or None,
            )
            if config.scheduler == "asha":
                scheduler = ASHAScheduler(
                    time_attr="training_iteration",
                    max_t=config.epochs,
                    # a grace period longer than the trial cannot apply (and Ray refuses it): cap it
                    grace_period=min(config.grace_period, config.epochs),
                    reduction_factor=config.reduction_factor,
                )
            else:
                scheduler = FIFOScheduler()
            callback = _progress_callback_class()(
                spec.ledger, objective.metric, objective.mode, config.num_samples
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=objective.metric,
                    mode=objective.mode,
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=config.num_samples,
                    max_concurrent_trials=config.max_concurrent_trials,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT_NAME,
                    storage_path=str(output / "ray"),
                    verbose=0,
                    callbacks=[callback],
                    # a trial whose node died (or any other failure) restarts from scratch elsewhere
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                ),
            )
        return tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def _history(result) -> list[dict[str, Any]]:
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return [result.metrics] if result.metrics else []
    return frame.to_dict("records")


def _write_outputs(config: SearchConfig, spec: TrialSpec, output: Path, results) -> SearchResult:
    objective = config.objective
    names = [p.name for p in config.space]
    ledger = read_ledger(output)
    finished = {r["trial_id"] for r in ledger if r["event"] == "complete"}
    starts: dict[str, list[dict[str, Any]]] = {}
    for record in ledger:
        if record["event"] == "start":
            starts.setdefault(record["trial_id"], []).append(record)
    rows = []
    for result in results:
        history = _history(result)
        trial_id = (result.metrics or {}).get("trial_id") or (
            history[-1].get("trial_id") if history else None
        )
        if trial_id is None:
            trial_id = Path(result.path).name if result.path else "?"
        values = [(h.get(objective.metric), h) for h in history]
        values = [(v, h) for v, h in values if v is not None and math.isfinite(v)]
        if values:
            pick = min if objective.mode == "min" else max
            best_value, best_epoch = pick(values, key=lambda vh: vh[0])
        else:
            best_value, best_epoch = math.nan, {}
        status = "ERROR" if result.error else ("TERMINATED" if trial_id in finished else "UNFINISHED")
        # the last report's iteration: a trial restarted after a failure trains (and counts) from epoch 1 again
        epochs = int(history[-1].get("training_iteration", len(history))) if history else 0
        last_start = (starts.get(trial_id) or [{}])[-1]
        row = {
            "trial_id": trial_id,
            "status": status,
            "epochs": epochs,
            # ASHA (or the trainer's own patience) ended it before the search's epochs
            "stopped_early": status == "TERMINATED" and epochs < config.epochs,
            objective.metric: best_value,
            "best_epoch": best_epoch.get("training_iteration", math.nan),
            "node_name": last_start.get("node_name", ""),
            "node_id": last_start.get("node_id", ""),
            "starts": len(starts.get(trial_id, [])),
        }
        for name in names:
            row[name] = (result.config or {}).get(name)
        for key in ("train_loss", "val_loss", "val_auc", "val_pairing_efficiency", "val_accuracy"):
            if key != objective.metric and key in best_epoch:
                row[key] = best_epoch[key]
        row["log_dir"] = str(Path(spec.trials_dir) / trial_id)
        rows.append(row)

    def rank_key(row):
        value = row[objective.metric]
        if not math.isfinite(value):
            return (1, 0.0)
        return (0, value if objective.mode == "min" else -value)

    rows.sort(key=rank_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    columns = [
        "rank",
        "trial_id",
        "status",
        "epochs",
        "stopped_early",
        "best_epoch",
        objective.metric,
        *names,
    ]
    columns += ["node_name", "node_id", "starts"]
    extra = sorted({k for r in rows for k in r} - set(columns) - {"log_dir"})
    columns += [*extra, "log_dir"]
    trials_csv = output / "trials.csv"
    with atomic_path(trials_csv) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    ranking = format_ranking(rows, objective.metric, names)
    ranking_md = output / "ranking.md"
    with atomic_path(ranking_md) as tmp:
        tmp.write_text(ranking + "\n")

    n_errored = sum(r["status"] == "ERROR" for r in rows)
    n_finished = sum(r["status"] == "TERMINATED" for r in rows)
    interrupted = n_finished + n_errored < config.num_samples
    best_path = None
    best: dict[str, Any] = {}
    if rows and math.isfinite(rows[0][objective.metric]):
        top = rows[0]
        params = {name: top[name] for name in names}
        best = {
            "trial_id": top["trial_id"],
            objective.metric: top[objective.metric],
            "params": params,
            "epochs_trained": top["epochs"],
            "log_dir": top["log_dir"],
            "model": spec.model,
            "training_file": spec.training_file,
            "validation_file": spec.validation_file,
        }
        if not get_kind(spec.model).pairs_jets:
            best["pairing"] = spec.pairing
        best_options = _best_options(spec, params)
        best_path = output / "best_options.json"
        get_kind(spec.model).save_options(best_options, best_path)
        with atomic_path(output / "best_trial.json") as tmp:
            tmp.write_text(json.dumps(best, indent=2, sort_keys=True, default=str) + "\n")
    return SearchResult(
        output_dir=output,
        best_options=best_path,
        trials_csv=trials_csv,
        ranking_md=ranking_md,
        ranking=ranking,
        n_trials=len(rows),
        n_finished=n_finished,
        n_errored=n_errored,
        interrupted=interrupted,
        best=best,
    )


def _best_options(spec: TrialSpec, params: dict[str, Any]) -> Any:
    """The base options with the best parameters, the data files of the search, and the full epoch count."""
    changes: dict[str, Any] = {**spec.overrides, **params, "seed": spec.seed}
    if get_kind(spec.model).uses_event_file:
        if spec.event_file:
            changes["event_info_file"] = spec.event_file
        changes["training_file"] = spec.training_file or ""
        changes["validation_file"] = spec.validation_file or ""
    # The DNN options hold no file names: `spanet2 dnn train -of BEST -tf FILE --pairing P` (see best_trial.json).
    return spec.base_options.replace(**changes)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def format_ranking(rows: list[dict[str, Any]], metric: str, names: list[str], *, top: int = 20) -> str:
    """A Markdown table of the best `top` trials (rank, trial, status, epochs, objective, parameters)."""
    header = ["rank", "trial", "status", "epochs", metric, *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows[:top]:
        cells = [
            row["rank"],
            row["trial_id"],
            row["status"],
            row["epochs"],
            row[metric],
            *(row[n] for n in names),
        ]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    if len(rows) > top:
        lines.append(f"\n({len(rows) - top} more trials in trials.csv)")
    return "\n".join(lines)
