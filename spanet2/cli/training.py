"""`spanet2 train | test | predict | export`: SPANet2 training, evaluation, predictions and ONNX export."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spanet2.atomic import atomic_path

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


# --------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The note's / upstream's `spanet.train` flags (shared with `python -m spanet2.train`)."""
    parser.add_argument("-of", "--options_file", required=True, help="options JSON (SPANet or SPANet2 keys)")
    parser.add_argument("--log_dir", default="spanet_output", help="runs go to LOG_DIR/NAME/version_<n>/")
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
        "-g",
        "--gpus",
        type=int,
        default=None,
        help="GPUs per process: 0 = CPU (default: options num_gpu, when CUDA is present)",
    )
    parser.add_argument(
        "-r",
        "--seed",
        "--random_seed",
        dest="seed",
        type=int,
        default=None,
        help="random seed (overrides options seed)",
    )
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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_train(args: argparse.Namespace) -> int:
    from spanet2.training.options import load_options
    from spanet2.training.trainer import train

    overrides = {
        key: value
        for key, value in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("precision", "16" if args.fp16 else args.precision),
            ("zero_stage", args.zero_stage),
            ("deepspeed_config", args.deepspeed_config),
            ("num_gpu", args.gpus),
        )
        if value is not None
    }
    options = load_options(args.options_file, **overrides)
    result = train(
        options,
        log_dir=args.log_dir,
        name=args.name,
        event_file=args.event_file,
        training_file=args.training_file,
        validation_file=args.validation_file,
        checkpoint=args.checkpoint,
        seed=args.seed,
        engine=args.engine,
        progress=not args.quiet,
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
def add_test_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("log_directory", help="a run directory LOG_DIR/NAME/version_<n>")
    parser.add_argument(
        "-tf", "--testing_file", required=True, help="test HDF5 (same topology and jet padding)"
    )
    parser.add_argument(
        "-ef", "--event_file", default=None, help="event YAML (default: the run's event.yaml)"
    )
    parser.add_argument("--gpu", action="store_true", help="evaluate on the GPU")
    parser.add_argument("-b", "--batch_size", type=int, default=None, help="evaluation batch size")
    parser.add_argument(
        "--json", default=None, metavar="OUT", help="also write all numbers to this JSON file"
    )
    return parser


def run_test(args: argparse.Namespace) -> int:
    from spanet2.training.trainer import evaluate, format_evaluation

    result = evaluate(
        args.log_directory,
        args.testing_file,
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
    parser.add_argument("log_directory", help="a run directory LOG_DIR/NAME/version_<n>")
    parser.add_argument("output_file", help="predictions HDF5 to write")
    parser.add_argument("-tf", "--testing_file", required=True, help="input HDF5")
    parser.add_argument(
        "-ef", "--event_file", default=None, help="event YAML (default: the run's event.yaml)"
    )
    parser.add_argument("--gpu", action="store_true", help="predict on the GPU")
    parser.add_argument("-b", "--batch_size", type=int, default=None, help="inference batch size")
    parser.add_argument("--chunk_size", type=int, default=65536, help="events read and written at a time")
    parser.add_argument(
        "--output_vectors", action="store_true", help="also write the event/particle embeddings"
    )
    return parser


def run_predict(args: argparse.Namespace) -> int:
    from spanet2.training.predict import predict

    summary = predict(
        args.log_directory,
        args.testing_file,
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
    from spanet2.training.export import export_onnx

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
    add_train_arguments(p).set_defaults(handler=run_train)
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

    parser = add_arguments(argparse.ArgumentParser(prog=f"python -m spanet2.{prog}"))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    return run_guarded(handler, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(module_main(add_train_arguments, run_train, "train"))
