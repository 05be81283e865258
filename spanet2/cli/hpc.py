"""`spanet2 tune` (Optuna + Ray Tune searches) and `spanet2 repeat` (n seeds in parallel, mean ± std)."""

from __future__ import annotations

import argparse
import sys

from spanet2.cli._argparse import add_ray_address, add_test_file
from spanet2.training.kinds import kind_names

__all__ = ["ORDER", "register"]

ORDER = 70


def dashboard_lines(url: str | None, *, host: str | None = None) -> list[str]:
    """What `tune` prints before the search: the Ray dashboard's URL and the SSH tunnel that reaches it from a
    laptop (the dashboard listens on 127.0.0.1 of the head node only)."""
    import socket
    from urllib.parse import urlsplit

    from spanet2.hpc.cluster import tunnel_command

    if not url:
        return ["Ray dashboard: not available (no dashboard in this Ray)"]
    url = url if "://" in url else f"http://{url}"
    port = urlsplit(url).port or 8265
    return [f"Ray dashboard: {url}",
            f"from your laptop: {tunnel_command(port, host=host or socket.gethostname())}"]  # fmt: skip


def _tune(args: argparse.Namespace) -> int:
    from spanet2.hpc.cluster import ray_session
    from spanet2.hpc.search_space import load_search_config, override_search_config
    from spanet2.hpc.tune import has_search_state, prepare_search, run_search, stored_search_config
    from spanet2.training.kinds import get_kind

    config = override_search_config(
        load_search_config(args.config),
        num_samples=args.num_samples,
        epochs=args.epochs,
        max_concurrent_trials=args.max_concurrent,
        objective=args.objective,
        seed=args.seed,
        event_file=args.event_file,
        training_file=args.training_file,
        validation_file=args.validation_file,
    )
    resume = args.resume
    if args.auto_resume:
        resume = has_search_state(args.output)
    if resume and has_search_state(args.output):
        config = stored_search_config(args.output, given=config)
    prepare_search(config, args.output, resume=resume)  # every input error before Ray starts
    # the session is opened here so that the dashboard address is printed before the search runs (run_search
    # attaches to it)
    with ray_session(args.ray_address, num_cpus=args.num_cpus, num_gpus=None) as session:
        for line in dashboard_lines(session.dashboard_url):
            print(line, flush=True)
        result = run_search(
            config, args.output, resume=resume, address=args.ray_address, num_cpus=args.num_cpus
        )
    print(result.ranking)
    print(
        f"\n{result.n_finished} finished, {result.n_errored} errored, {result.n_trials} trials in "
        f"{result.output_dir}"
    )
    if result.best_options is not None:
        print(
            f"best options: {result.best_options}  (spanet2 {get_kind(config.model).train_command}"
            f" -of {result.best_options} ...)"
        )
    print(f"all trials: {result.trials_csv}")
    if result.interrupted:
        print(
            f"search interrupted: continue with `spanet2 tune {args.config} --output {args.output} --resume`",
            file=sys.stderr,
        )
        return 130
    return 0 if result.n_finished else 1


def _repeat(args: argparse.Namespace) -> int:
    from spanet2.hpc.repeat import format_repeat_summary, run_repeats

    result = run_repeats(
        args.options_file,
        n=args.n,
        log_dir=args.log_dir,
        name=args.name,
        event_file=args.event_file,
        training_file=args.training_file,
        validation_file=args.validation_file,
        testing_file=args.testing_file,
        seed=args.seed,
        epochs=args.epochs,
        model=args.model,
        pairing=args.pairing,
        address=args.ray_address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        num_cpus=args.num_cpus,
        task_index=args.task_index,
    )
    print(format_repeat_summary(result))
    if result.complete:
        print(f"per-seed results and summary: {result.summary_path}")
    else:
        print(
            f"{len(result.runs)} of {result.n} seeds finished; the task that finishes the last writes "
            f"{result.summary_path}"
        )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tune",
        help="hyper-parameter search (Optuna TPE + ASHA through Ray Tune)",
        description="Search the options of configs/tune/*.yaml: every trial calls the same training function as "
        "`spanet2 train` (or `spanet2 dnn train`). Writes ranking.md, trials.csv and best_options.json "
        "under --output. Interrupt (Ctrl-C / SIGTERM) saves the search; --resume continues it without "
        "re-running finished trials.",
    )
    p.add_argument(
        "config", help="search configuration YAML (configs/tune/spanet2.yaml, configs/tune/dnn.yaml)"
    )
    p.add_argument("-o", "--output", default="runs/tune", help="output folder (default runs/tune)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the interrupted search in --output")
    resume.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue the search in --output if there is one, else start it (batch jobs)",
    )
    add_ray_address(p)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--num-samples", type=int, default=None, help="number of trials (overrides the config)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (overrides the config)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (overrides the config)")
    p.add_argument("--objective", default=None, help="val_loss | val_auc | val_pairing_efficiency")
    p.add_argument("--seed", type=int, default=None, help="sampler and training seed (overrides the config)")
    p.add_argument("-ef", "--event_file", default=None, help="event topology YAML (overrides config/options)")
    p.add_argument("-tf", "--training_file", default=None, help="training HDF5 (overrides config/options)")
    p.add_argument(
        "-vf", "--validation_file", default=None, help="validation HDF5 (overrides config/options)"
    )
    p.set_defaults(handler=_tune, smoke_caps={"num_samples": 1, "epochs": 1, "max_concurrent": 1})

    p = subparsers.add_parser(
        "repeat",
        help="train n seeds in parallel (Ray) and report mean ± std of ACC, AUC, assignment table",
        description="Train the same options with seeds SEED, SEED+1, ... in parallel on Ray, evaluate each on the "
        "testing file, and print mean ± std (sample std, n-1) over the seeds. Per-seed numbers and the "
        "summary go to LOG_DIR/NAME/repeat.json.",
    )
    p.add_argument("options_file", help="options JSON (SPANet2, or DNN with --model dnn)")
    p.add_argument("-n", type=int, default=10, help="number of seeds (default 10)")
    p.add_argument("--model", choices=kind_names(), default="spanet2")
    p.add_argument(
        "-l", "--log_dir", default="runs/repeat", help="runs go to LOG_DIR/NAME/seed_<s>/version_0"
    )
    p.add_argument("--name", default="repeat")
    p.add_argument("-ef", "--event_file", default=None)
    p.add_argument("-tf", "--training_file", default=None)
    p.add_argument("-vf", "--validation_file", default=None)
    add_test_file(
        p,
        "labelled HDF5 to evaluate every seed on (default: the options' testing_file)",
        required=False,
        short=False,
    )
    p.add_argument("--pairing", default="min-dr", help="DNN only: min-dr or a predictions HDF5")
    p.add_argument("-r", "--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("-e", "--epochs", type=int, default=None, help="epochs (overrides the options)")
    add_ray_address(p)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--cpus-per-run", type=float, default=1.0)
    p.add_argument(
        "--gpus-per-run", type=float, default=0.0, help="fractions allowed (0.25: four runs per GPU)"
    )
    p.add_argument(
        "--task-index", type=int, default=None, metavar="I",
        help="train only seed SEED+I, here, without Ray (one SLURM array task: slurm/repeat.sh under "
        "sbatch --array=0-N-1); the task that finishes the last seed writes the summary",
    )  # fmt: skip
    p.set_defaults(handler=_repeat, smoke_caps={"n": 2, "epochs": 1})
