"""`spanet2 dnn train|test|predict` (the DNN baseline) and `spanet2 features` (high-level observables)."""

from __future__ import annotations

import argparse
import json

from spanet2.atomic import atomic_path
from spanet2.cli._argparse import add_hidden_alias, add_no_progress, add_test_file

__all__ = ["ORDER", "register", "run_dnn_train", "run_dnn_test", "run_dnn_predict", "run_features"]

ORDER = 40

_PAIRING_HELP = "jet pairing: 'min-dr' (computed) or a predictions HDF5 of `spanet2 predict` (TARGETS/h*/b*)"


def _add_pairing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairing", default="min-dr", metavar="min-dr|PRED.h5", help=_PAIRING_HELP)


def run_dnn_train(args: argparse.Namespace) -> int:
    from spanet2.training.dnn import load_dnn_options, train_dnn

    options = load_dnn_options(args.options_file).replace(epochs=args.epochs, batch_size=args.batch_size)
    result = train_dnn(options, log_dir=args.log_dir, name=args.name, training_file=args.training_file,
                       validation_file=args.validation_file, pairing=args.pairing,
                       validation_pairing=args.validation_pairing, checkpoint=args.checkpoint, seed=args.seed,
                       progress=not args.no_progress)  # fmt: skip
    print(f"run directory: {result.run_dir}")
    print("best epoch: " + ", ".join(f"{k}={v:.4g}" for k, v in result.best_metrics.items()))
    return 0


def run_dnn_test(args: argparse.Namespace) -> int:
    from spanet2.training.dnn import evaluate_dnn

    result = evaluate_dnn(args.log_directory, args.testing_file, pairing=args.pairing)
    print("| events | signal | background | ACC | AUC |\n|---|---|---|---|---|")
    print(f"| {result['events']} | {result['signal']} | {result['background']} | "
          f"{result['accuracy']:.4f} | {result['auc']:.4f} |")  # fmt: skip
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


def run_dnn_predict(args: argparse.Namespace) -> int:
    from spanet2.training.dnn import predict_dnn

    summary = predict_dnn(args.log_directory, args.output_file, args.testing_file, pairing=args.pairing)
    print(f"wrote {summary['events']} events to {summary['output']}"
          + (f" ({summary['invalid_pairings']} without a valid pairing: score 0)" if summary["invalid_pairings"] else ""))  # fmt: skip
    return 0


def run_features(args: argparse.Namespace) -> int:
    from spanet2.physics.features import write_features_file

    with_extra = {"auto": None, "20": True, "16": False}[args.features]
    summary = write_features_file(args.input_file, args.output_file, pairing=args.pairing, with_extra=with_extra,
                                  chunk_size=args.chunk_size)  # fmt: skip
    print(f"wrote {len(summary['features'])} features of {summary['events']} events to {args.output_file}")
    return 0


def register(subparsers) -> None:
    """Add `dnn` (train, test, predict) and `features`."""
    dnn = subparsers.add_parser("dnn", help="the DNN baseline on high-level observables: train, test, predict",
                                description="A DNN classifier on the 20 (16) high-level observables of a pairing "
                                "(min-dR or SPANet2 predictions); log dir LOG_DIR/NAME/version_<n>/.")  # fmt: skip
    sub = dnn.add_subparsers(dest="dnn_command", metavar="{train,test,predict}", required=True)

    p = sub.add_parser("train", help="train the DNN (early stopping on the validation loss)",
                       description="Train the DNN; writes options.json, normalization.json, checkpoints/{best,last}.pt, "
                       "metrics.jsonl and provenance.json under LOG_DIR/NAME/version_<n>/.")  # fmt: skip
    p.add_argument(
        "-of", "--options_file", required=True, help="DNN options JSON (configs/options/dnn_*.json)"
    )
    p.add_argument("-l", "--log_dir", default="dnn_output", help="runs go to LOG_DIR/NAME/version_<n>/")
    p.add_argument("-n", "--name", default="dnn", help="run name (a folder under --log_dir)")
    p.add_argument(
        "-tf", "--training_file", required=True, help="training HDF5 (or a `spanet2 features` file)"
    )
    p.add_argument(
        "-vf",
        "--validation_file",
        default=None,
        help="validation HDF5 (default: validation_fraction of the training file, split by seed)",
    )
    _add_pairing(p)
    p.add_argument(
        "--validation_pairing",
        default=None,
        metavar="min-dr|PRED.h5",
        help="pairing of the validation file (default: --pairing)",
    )
    p.add_argument("-cf", "--checkpoint", default=None, help="resume from a checkpoints/last.pt")
    p.add_argument("-e", "--epochs", type=int, default=None, help="maximum epochs (overrides options)")
    p.add_argument("-b", "--batch_size", type=int, default=None, help="batch size (overrides options)")
    p.add_argument(
        "-r",
        "--seed",
        "--random_seed",
        dest="seed",
        type=int,
        default=None,
        help="random seed (overrides options seed)",
    )
    add_no_progress(p)
    p.set_defaults(handler=run_dnn_train, smoke_caps={"epochs": 2})

    p = sub.add_parser(
        "test",
        help="ACC and AUC of a trained DNN on a labelled file",
        description="Evaluate LOG_DIRECTORY's best checkpoint: unweighted ACC (score > 0.5) and AUC.",
    )
    p.add_argument("log_directory", help="a run directory LOG_DIR/NAME/version_<n>")
    add_test_file(p, "labelled HDF5 (CLASSIFICATIONS/EVENT/signal)")
    _add_pairing(p)
    p.add_argument("--json", default=None, metavar="OUT", help="also write the numbers to this JSON file")
    p.set_defaults(handler=run_dnn_test)

    p = sub.add_parser(
        "predict",
        help="write DNN scores (and the pairing used) in the predictions layout",
        description="Predictions HDF5: input groups copied, TARGETS = the pairing used, "
        "CLASSIFICATIONS/EVENT/signal_probability = DNN score, FEATURES/* = observables.",
    )
    p.add_argument("log_directory", help="a run directory LOG_DIR/NAME/version_<n>")
    p.add_argument("output_file", help="predictions HDF5 to write")
    add_test_file(p, "input HDF5")
    _add_pairing(p)
    p.set_defaults(handler=run_dnn_predict)

    p = subparsers.add_parser("features", help="the DNN's 20 (16) high-level observables of a jet pairing to HDF5",
                              description="Write FEATURES/<name> (20, or 16 without MET/leptons) and "
                              "FEATURES/pairing for IN.h5, pairing by min-dR or a predictions file.")  # fmt: skip
    p.add_argument("input_file", help="event HDF5 (INPUTS/Source/*, optional GLOBAL_EXTRA/*)")
    p.add_argument("output_file", help="features HDF5 to write")
    _add_pairing(p)
    p.add_argument(
        "--features",
        choices=("auto", "20", "16"),
        default="auto",
        help="20 with MET/leptons, 16 without; auto = 20 when GLOBAL_EXTRA is present",
    )
    chunk = p.add_argument("--chunk-size", type=int, default=65536, help="events processed at a time")
    add_hidden_alias(p, chunk, "--chunk_size")
    p.set_defaults(handler=run_features)
