"""`spanet2 train | test | predict | export`: SPANet2 training, evaluation, predictions and ONNX export."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spanet2.atomic import atomic_path
from spanet2.cli._argparse import Parser, add_hidden_alias, add_no_progress, add_unsupported
from spanet2.cli._smoke import apply_smoke_caps

__all__ = [
    "ORDER",
    "register",
    "add_train_arguments",
    "add_test_arguments",
    "add_predict_arguments",
    "add_export_arguments",
    "run_train",
    "run_test",
    "run_predict",
    "run_export",
]

ORDER = 30
_SMOKE_CAPS = {"train": {"epochs": 1}}  # SPANET2_SMOKE_TEST (spanet2.cli._smoke)


# --------------------------------------------------------------------------------------------- train
# Upstream SPANet v2.1.1 flags that spanet2 does not implement, and what differs (README "Upstream flags").
_UPSTREAM_TRAIN_UNSUPPORTED = (
    (
        ("-sf", "--state_dict"),
        True,
        "upstream starts from a checkpoint's weights only; spanet2 cannot "
        "(-cf CHECKPOINT resumes a whole run)",
    ),
    (
        ("-fsf", "--freeze_state_dict"),
        False,
        "upstream freezes the weights loaded by -sf; spanet2 has no -sf",
    ),
    (
        ("-g", "--graph"),
        True,
        "upstream logs the computation graph to TensorBoard; spanet2 does not "
        "(here the GPU count is --gpus N)",
    ),
    (
        ("-ts", "--torch_script"),
        False,
        'upstream compiles with TorchScript; spanet2 uses torch.compile: set "compile": true in the options',
    ),
    (
        ("--profile",),
        False,
        "upstream runs the PyTorch profiler for one run; spanet2 has no profiler flag "
        "(python benchmarks/train_throughput.py measures throughput)",
    ),
    (
        ("--fairscale",),
        False,
        "upstream shards with FairScale; spanet2 uses --engine deepspeed --zero_stage N",
    ),
)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Upstream SPANet's `spanet.train` flags (shared with `python -m spanet2.train`) and SPANet2's own."""
    parser.add_argument(
        "-of", "--options_file", default=None,
        help="options JSON (SPANet or SPANet2 keys; default: upstream's default options)",
    )  # fmt: skip
    parser.add_argument(
        "-l", "--log_dir", default="spanet_output", help="runs go to LOG_DIR/NAME/version_<n>/"
    )
    parser.add_argument("-n", "--name", default="spanet_output", help="run name (a folder under --log_dir)")
    parser.add_argument("-ef", "--event_file", default=None, help="event topology YAML (overrides options)")
    parser.add_argument("-tf", "--training_file", default=None, help="training HDF5 (overrides options)")
    parser.add_argument(
        "-vf",
        "--validation_file",
        default=None,
        help="validation HDF5 (default: the last 1-train_validation_split of the training file)",
    )
    parser.add_argument(
        "-cf",
        "--checkpoint",
        default=None,
        help="resume from this checkpoint (checkpoints/last.pt) at the next epoch",
    )
    parser.add_argument(
        "-e", "--epochs", type=int, default=None, help="total number of epochs (overrides options)"
    )
    parser.add_argument("-b", "--batch_size", type=int, default=None, help="batch size (overrides options)")
    parser.add_argument(
        "-f", "--full_events", action="store_true",
        help="train on fully reconstructable events only (partial_events and balance_particles off)",
    )  # fmt: skip
    parser.add_argument(
        "-p", "--limit_dataset", type=float, default=None, metavar="PERCENT",
        help="use the first PERCENT %% of the events (0 < PERCENT <= 100; sets dataset_limit)",
    )  # fmt: skip
    parser.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs per process: 0 = CPU (default: options num_gpu, when CUDA is present)",
    )
    parser.add_argument(
        "-r", "--random_seed", type=int, default=None,
        help="as upstream, shuffles the events before the split with this seed (dataset_randomization, when "
        "> 0); also seeds everything else unless --seed is given",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides options seed)")
    parser.add_argument(
        "--engine",
        choices=("single", "ddp", "deepspeed"),
        default=None,
        help="single process, DDP (under torchrun) or DeepSpeed (overrides options)",
    )
    parser.add_argument(
        "--precision",
        choices=("32", "bf16", "16"),
        default=None,
        help="autocast precision on GPU (overrides options)",
    )
    parser.add_argument("-fp16", "--fp16", action="store_true", help="same as --precision 16 (upstream flag)")
    parser.add_argument(
        "--zero_stage", type=int, choices=(0, 1, 2, 3), default=None, help="DeepSpeed ZeRO stage"
    )
    parser.add_argument("--deepspeed_config", default=None, help="DeepSpeed JSON config (overrides options)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="debug logging and verbose_output (upstream flag)",
    )  # fmt: skip
    add_no_progress(parser)
    for flags, takes_value, difference in _UPSTREAM_TRAIN_UNSUPPORTED:
        add_unsupported(parser, *flags, difference=difference, takes_value=takes_value)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from spanet2.errors import InputError
    from spanet2.training.options import load_options, options_from_dict
    from spanet2.training.trainer import train

    if args.limit_dataset is not None and not 0 < args.limit_dataset <= 100:
        raise InputError(
            "-p/--limit_dataset", None, f"expected a percentage in (0, 100], got {args.limit_dataset:g}"
        )
    overrides = {
        key: value
        for key, value in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("precision", "16" if args.fp16 else args.precision),
            ("zero_stage", args.zero_stage),
            ("deepspeed_config", args.deepspeed_config),
            ("num_gpu", args.gpus),
            ("dataset_limit", None if args.limit_dataset is None else args.limit_dataset / 100),
            ("dataset_randomization", args.random_seed if (args.random_seed or 0) > 0 else None),
            ("verbose_output", True if getattr(args, "verbose", False) else None),
        )
        if value is not None
    }
    if args.full_events:  # upstream's -f
        overrides.update(partial_events=False, balance_particles=False)
    if args.options_file is None:  # upstream: the default options, files from -ef/-tf
        options = options_from_dict(overrides, file="command line")
    else:
        options = load_options(args.options_file, **overrides)
    result = train(
        options,
        log_dir=args.log_dir,
        name=args.name,
        event_file=args.event_file,
        training_file=args.training_file,
        validation_file=args.validation_file,
        checkpoint=args.checkpoint,
        seed=args.seed if args.seed is not None else args.random_seed,
        engine=args.engine,
        progress=not args.no_progress,
    )
    if result.is_main:
        print(f"run directory: {result.run_dir}")
        keys = ("epoch", "val_loss", "val_pairing_efficiency", "val_accuracy", "val_auc")
        best = ", ".join(
            f"{k}={result.best_metrics[k]:.4g}"
            if isinstance(result.best_metrics.get(k), float)
            else f"{k}={result.best_metrics.get(k)}"
            for k in keys
            if k in result.best_metrics
        )
        print(f"best epoch: {best}")
    return 0


# ---------------------------------------------------------------------------------------------- test
def _add_evaluation_arguments(parser: argparse.ArgumentParser, *, predict: bool) -> None:
    """The flags `test` and `predict` share with upstream's `spanet.test` / `spanet.predict`."""
    parser.add_argument("log_directory", help="a run directory LOG_DIR/NAME/version_<n>")
    if predict:
        parser.add_argument("output_file", help="predictions HDF5 to write")
    tf = parser.add_argument(
        "-tf", "--test_file", dest="testing_file", default=None, metavar="FILE",
        help=f"{'input' if predict else 'test'} HDF5 (same topology and jet padding; default: the run's "
        "options testing_file)",
    )  # fmt: skip
    add_hidden_alias(parser, tf, "--testing_file")
    parser.add_argument(
        "-ef", "--event_file", default=None, help="event YAML (default: the run's event.yaml)"
    )
    bs = parser.add_argument(
        "-bs", "--batch_size", type=int, default=None, help="batch size (default: the run's)"
    )
    add_hidden_alias(parser, bs, "-b")
    parser.add_argument("-g", "--gpu", action="store_true", help="run on the GPU")


def add_test_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Upstream SPANet's `spanet.test` flags (shared with `python -m spanet2.test`) and `--json`."""
    _add_evaluation_arguments(parser, predict=False)
    parser.add_argument(
        "--json", default=None, metavar="OUT", help="also write all numbers to this JSON file"
    )
    add_unsupported(parser, "-l", "--lines", takes_value=True,
                    difference="upstream sets the number of jet-multiplicity rows; spanet2's assignment table "
                    "always has the note's rows N_jet = 4, 5, >= 6 and Total")  # fmt: skip
    add_unsupported(parser, "-tex", "--latex", takes_value=False,
                    difference="upstream prints a LaTeX table; spanet2 prints Markdown (and --json OUT)")  # fmt: skip
    return parser


def _testing_file(args: argparse.Namespace) -> str:
    """-tf, else the run's options testing_file (as upstream)."""
    if args.testing_file:
        return args.testing_file
    from spanet2.errors import InputError
    from spanet2.training import logdir
    from spanet2.training.options import load_options

    run = logdir.open_run_dir(args.log_directory)
    testing_file = load_options(run.options).testing_file
    if not testing_file:
        raise InputError(run.options, "testing_file", "no test file: give -tf/--test_file FILE")
    return testing_file


def run_test(args: argparse.Namespace) -> int:
    from spanet2.training.evaluation import evaluate, format_evaluation

    result = evaluate(
        args.log_directory,
        _testing_file(args),
        gpu=args.gpu,
        batch_size=args.batch_size,
        event_file=args.event_file,
    )
    print(format_evaluation(result))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


# ------------------------------------------------------------------------------------------- predict
def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Upstream SPANet's `spanet.predict` flags (shared with `python -m spanet2.predict`) and SPANet2's own."""
    _add_evaluation_arguments(parser, predict=True)
    parser.add_argument(
        "-v", "--output_vectors", action="store_true", help="also write the event/particle embeddings"
    )
    chunk = parser.add_argument(
        "--chunk-size", type=int, default=65536, help="events read and written at a time"
    )
    add_hidden_alias(parser, chunk, "--chunk_size")
    return parser


def run_predict(args: argparse.Namespace) -> int:
    from spanet2.training.predict import predict

    summary = predict(
        args.log_directory,
        _testing_file(args),
        args.output_file,
        gpu=args.gpu,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        output_vectors=args.output_vectors,
        event_file=args.event_file,
    )
    print(f"wrote {summary['n_events']} events to {Path(args.output_file)}")
    return 0


# -------------------------------------------------------------------------------------------- export
def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("log_directory", help="a run directory LOG_DIR/NAME/version_<n>")
    parser.add_argument(
        "output_file", help="ONNX file to write (the decoder: spanet2.training.export.decode_numpy)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    return parser


def run_export(args: argparse.Namespace) -> int:
    import importlib.util

    from spanet2.errors import InputError
    from spanet2.training.export import export_onnx

    if importlib.util.find_spec("onnx") is None:
        raise InputError("spanet2 export", None, "needs the onnx package: pip install 'spanet2[export]'")

    info = export_onnx(args.log_directory, args.output_file, opset=args.opset)
    print(
        f"wrote {args.output_file}: inputs {', '.join(info['inputs'])}; outputs {', '.join(info['outputs'])}"
    )
    return 0


def register(subparsers) -> None:
    """Add train, test, predict and export to `spanet2`."""
    p = subparsers.add_parser(
        "train",
        help="train SPANet2 (log dir with checkpoints, metrics, provenance)",
        description="Train SPANet2 on an HDF5 event file; resume with -cf.",
    )
    add_train_arguments(p).set_defaults(handler=run_train, smoke_caps=_SMOKE_CAPS["train"])
    p = subparsers.add_parser(
        "test",
        help="assignment table, ACC/AUC and pairing efficiency by kappa on a test file",
        description="Evaluate a run directory on a test file (the training file is not needed).",
    )
    add_test_arguments(p).set_defaults(handler=run_test)
    p = subparsers.add_parser(
        "predict",
        help="write predicted assignments, probabilities and scores to HDF5",
        description="Predictions HDF5: INPUTS copied, TARGETS = predicted jets, "
        "CLASSIFICATIONS = softmax scores, extra groups copied through.",
    )
    add_predict_arguments(p).set_defaults(handler=run_predict)
    p = subparsers.add_parser(
        "export",
        help="export the network to ONNX (decoder: export.decode_numpy)",
        description="Export a run's network to ONNX; decode with "
        "spanet2.training.export.decode_numpy (pure numpy, same greedy assignments).",
    )
    add_export_arguments(p).set_defaults(handler=run_export)


def module_main(add_arguments, handler, prog: str, argv: list[str] | None = None) -> int:
    """`python -m spanet2.<prog>`: the same flags and handler as the `spanet2 <prog>` command."""
    import logging

    from spanet2.cli import run_guarded

    parser = add_arguments(Parser(prog=f"python -m spanet2.{prog}"))
    # train has upstream's -v/--verbose; predict's -v is upstream's --output_vectors
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.set_defaults(smoke_caps=_SMOKE_CAPS.get(prog, {}))
    args = parser.parse_args(argv)
    apply_smoke_caps(args)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run_guarded(handler, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(module_main(add_train_arguments, run_train, "train"))
