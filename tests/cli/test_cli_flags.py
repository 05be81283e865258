"""Every `spanet2` flag: negative values in both spellings, one-line usage errors, old spellings kept as hidden
aliases, and upstream SPANet v2.1.1's train/test/predict flags (same meaning or a refusal naming the difference)."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest

from spanet2.cli import build_parser
from spanet2.cli._argparse import _Unsupported


def _subparsers(parser: argparse.ArgumentParser, prefix=()):
    """(command words, parser) for every command and subcommand of `spanet2`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def _leaf_commands():
    return [
        (words, p)
        for words, p in _subparsers(build_parser())
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]


def _minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """Positionals and required options filled with harmless values."""
    argv = []
    for action in parser._actions:
        if (
            action.required
            or action in getattr(parser, "_required_with_alias", ())
            or (not action.option_strings and action.nargs != 0)
        ):
            value = str(action.choices[0]) if action.choices else "1"
            argv += ([action.option_strings[0]] if action.option_strings else []) + [value]
    return argv


def _value_flags(parser: argparse.ArgumentParser):
    """Options that take one value, are listed in --help and are not refused upstream flags."""
    for action in parser._actions:
        if (
            action.option_strings
            and action.nargs in (None, "?")
            and action.help is not argparse.SUPPRESS
            and not isinstance(action, _Unsupported | argparse._VersionAction)
            and not action.choices
        ):
            yield action


_NEGATIVE = {int: ("-3", -3), float: ("-0.5e-1", -0.05)}


def test_every_value_flag_accepts_a_negative_value_in_both_spellings():
    checked = 0
    for words, parser in _leaf_commands():
        base = _minimal_argv(parser)
        for action in _value_flags(parser):
            text, expected = _NEGATIVE.get(action.type, ("-5,-3,1", "-5,-3,1"))
            for flag in action.option_strings:
                for argv in ([flag, text], [f"{flag}={text}"]):
                    args = build_parser().parse_args([*words, *base, *argv])
                    value = getattr(args, action.dest)
                    value = value[-1] if isinstance(value, list) else value
                    assert value == expected, (words, argv, value)
                    checked += 1
    assert checked > 100  # the walk really found the flags


@pytest.mark.parametrize(
    "argv, dest, expected",
    [
        (["generate", "sets", "--kappa", "-5,-3,-1,1", "--signal-per-kappa", "1", "--background", "1",
          "--output-dir", "d"], "kappa", "-5,-3,-1,1"),
        (["generate", "signal", "--kappa=-5,1,5", "--events-per-kappa", "1", "--output", "f"], "kappa", "-5,1,5"),
        (["generate", "background", "--kappa-input", "-1.5,2", "--events", "1", "--output", "f"],
         "kappa_input", "-1.5,2"),
        (["convert-delphes", "a.root", "b.h5", "--kappa", "-5", "--kappa-input", "-5,-3"], "kappa", -5.0),
        (["scan", "c.yaml", "--workspace-kappa", "-2.5", "--workspace-kappa=-1e-1"], "workspace_kappa",
         [-2.5, -0.1]),
    ],
)  # fmt: skip
def test_kappa_lists_with_negative_values_parse(argv, dest, expected):
    assert getattr(build_parser().parse_args(argv), dest) == expected


def test_generate_signal_with_negative_kappa_points_writes_them(tmp_path, run_cli):
    out = tmp_path / "sig.h5"
    rc, stdout, err = run_cli("generate", "signal", "--kappa", "-5,-1.5,2", "--events-per-kappa", 4,
                              "--seed", 2, "--output", out, "--no-progress")  # fmt: skip
    assert rc == 0, err
    with h5py.File(out) as h5:
        kappas = np.unique(h5["INPUTS/Kappa/kappa"][()])
    np.testing.assert_array_equal(kappas, [-5.0, -1.5, 2.0])
    rc, _, err = run_cli("generate", "signal", "--kappa=-5,x", "--events-per-kappa", 4, "--output", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--kappa" in err and "'x'" in err


def test_usage_errors_are_one_line_with_exit_code_2(run_cli):
    for argv in (["train", "--epochs", "many"], ["predict", "run"], ["dnn", "test", "run"], ["nonsense"]):
        rc, out, err = run_cli(*argv)
        assert rc == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("spanet2: error: "), (argv, err)


@pytest.mark.parametrize(
    "argv, dest, value",
    [
        (["store", "build", "-o", "s", "--chunk_size", "7"], "chunk_size", 7),
        (["store", "build", "-o", "s", "--chunk-size", "7"], "chunk_size", 7),
        (["store", "build", "-o", "s", "--sqrt_s_tev", "14"], "sqrt_s", 14.0),
        (["store", "build", "-o", "s", "--sqrt-s", "14"], "sqrt_s", 14.0),
        (["store", "build", "-o", "s", "--quiet"], "no_progress", True),
        (["predict", "r", "o.h5", "--chunk_size", "9"], "chunk_size", 9),
        (["features", "a", "b", "--chunk_size", "9"], "chunk_size", 9),
        (["tune", "c.yaml", "--address", "auto"], "ray_address", "auto"),
        (["tune", "c.yaml", "--ray-address", "auto"], "ray_address", "auto"),
        (["repeat", "o.json", "--address", "auto"], "ray_address", "auto"),
        (["repeat", "o.json", "--testing_file", "t.h5"], "testing_file", "t.h5"),
        (["study", "c.yaml", "--ray-address", "auto"], "ray_address", "auto"),
        (["study", "c.yaml", "--seed", "-4"], "seed", -4),
        (["dnn", "test", "r", "--testing_file", "t.h5"], "testing_file", "t.h5"),
        (["dnn", "train", "-of", "o", "-tf", "t", "--quiet"], "no_progress", True),
        (["train", "--quiet"], "no_progress", True),
        (["generate", "sets", "--signal-per-kappa", "1", "--background", "1", "--output-dir", "d", "--sqrt-s", "14"],
         "sqrt_s", 14.0),
    ],
)  # fmt: skip
def test_one_spelling_per_concept_and_old_spellings_still_work(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_old_spellings_are_hidden_from_help():
    helps = {" ".join(words): p.format_help() for words, p in _leaf_commands()}
    for old in ("--chunk_size", "--sqrt_s_tev", "--address ", "--quiet", "--testing_file"):
        assert not [w for w, text in helps.items() if old in text], old
    for concept in ("--chunk-size", "--sqrt-s", "--ray-address", "--no-progress"):
        assert [w for w, text in helps.items() if concept in text], concept


# ------------------------------------------------------------------------------------- upstream flags
# Upstream SPANet v2.1.1 (spanet/train.py, test.py, predict.py): every flag, and the destination it must
# fill here with the value given (same meaning), or None when spanet2 refuses it with the difference.
UPSTREAM_TRAIN = {
    ("-ef", "--event_file"): ("event_file", "e.yaml"),
    ("-tf", "--training_file"): ("training_file", "t.h5"),
    ("-vf", "--validation_file"): ("validation_file", "v.h5"),
    ("-of", "--options_file"): ("options_file", "o.json"),
    ("-cf", "--checkpoint"): ("checkpoint", "last.pt"),
    ("-sf", "--state_dict"): None,
    ("-fsf", "--freeze_state_dict"): None,
    ("-l", "--log_dir"): ("log_dir", "logs"),
    ("-n", "--name"): ("name", "run"),
    ("-fp16",): ("fp16", True),
    ("--fairscale",): None,
    ("-g", "--graph"): None,
    ("-v", "--verbose"): ("verbose", True),
    ("-b", "--batch_size"): ("batch_size", 64),
    ("-f", "--full_events"): ("full_events", True),
    ("-p", "--limit_dataset"): ("limit_dataset", 25.0),
    ("-r", "--random_seed"): ("random_seed", 3),
    ("-ts", "--torch_script"): None,
    ("--profile",): None,
    ("--epochs",): ("epochs", 2),
    ("--gpus",): ("gpus", 0),
}
UPSTREAM_TEST = {
    ("-tf", "--test_file"): ("testing_file", "t.h5"),
    ("-ef", "--event_file"): ("event_file", "e.yaml"),
    ("-bs", "--batch_size"): ("batch_size", 64),
    ("-l", "--lines"): None,
    ("-g", "--gpu"): ("gpu", True),
    ("-tex", "--latex"): None,
}
UPSTREAM_PREDICT = {
    ("-tf", "--test_file"): ("testing_file", "t.h5"),
    ("-ef", "--event_file"): ("event_file", "e.yaml"),
    ("-bs", "--batch_size"): ("batch_size", 64),
    ("-g", "--gpu"): ("gpu", True),
    ("-v", "--output_vectors"): ("output_vectors", True),
}


def _upstream_cases():
    for command, positional, table in (
        ("train", [], UPSTREAM_TRAIN),
        ("test", ["run"], UPSTREAM_TEST),
        ("predict", ["run", "out.h5"], UPSTREAM_PREDICT),
    ):
        for flags, meaning in table.items():
            for flag in flags:
                yield command, positional, flag, meaning


@pytest.mark.parametrize("command, positional, flag, meaning", list(_upstream_cases()))
def test_upstream_flag_means_the_same_or_is_refused_naming_the_difference(
    command, positional, flag, meaning, run_cli, capsys
):
    from spanet2.cli._argparse import Parser
    from spanet2.cli.training import add_predict_arguments, add_test_arguments, add_train_arguments

    add = {"train": add_train_arguments, "test": add_test_arguments, "predict": add_predict_arguments}[
        command
    ]
    for parser in (build_parser(), add(Parser(prog=f"python -m spanet2.{command}"))):
        words = [command] if parser.prog == "spanet2" else []
        if meaning is None:
            with pytest.raises(SystemExit) as exc:
                parser.parse_args([*words, *positional, flag, "1"])
            assert exc.value.code == 2
            continue
        dest, value = meaning
        argv = [flag] if value is True else [flag, str(value)]
        args = parser.parse_args([*words, *positional, *argv])
        assert getattr(args, dest) == value, (command, flag)
    if meaning is None:
        capsys.readouterr()
        rc, out, err = run_cli(command, *positional, flag)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "upstream" in err and flag in err, err


def test_upstream_train_flags_reach_the_options(monkeypatch, tmp_path):
    """-f, -p, -r and -v change the options as upstream does; -r also seeds spanet2 (unless --seed)."""
    import spanet2.training.trainer as trainer
    from spanet2.cli.training import run_train

    seen = {}

    def fake_train(options, **kwargs):
        seen.update(options=options, **kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(trainer, "train", fake_train)
    args = build_parser().parse_args(["train", "-ef", "e.yaml", "-tf", "t.h5", "-f", "-p", "25", "-r", "3", "-v",
                                      "--epochs", "2"])  # fmt: skip
    with pytest.raises(SystemExit):
        run_train(args)
    opts = seen["options"]
    assert (opts.partial_events, opts.balance_particles) == (False, False)
    assert opts.dataset_limit == 0.25 and opts.dataset_randomization == 3 and opts.verbose_output is True
    assert opts.epochs == 2 and seen["seed"] == 3 and seen["event_file"] == "e.yaml"
    args = build_parser().parse_args(["train", "-tf", "t.h5", "-r", "3", "--seed", "8", "-p", "150"])
    from spanet2.errors import InputError

    with pytest.raises(InputError, match="limit_dataset"):
        run_train(args)


def test_predict_dash_v_writes_vectors_and_bs_sets_the_batch(tmp_path):
    """Upstream's `predict -v` means --output_vectors (not --verbose); `-bs` is the batch size."""
    args = build_parser().parse_args(["predict", "run", "o.h5", "-tf", "t.h5", "-v", "-bs", "16"])
    assert args.output_vectors is True and args.batch_size == 16
    args = build_parser().parse_args(["-v", "predict", "run", "o.h5", "-tf", "t.h5"])
    assert args.verbose is True and args.output_vectors is False


def test_tune_prints_the_dashboard_url_and_the_ssh_tunnel():
    from spanet2.cli.hpc import dashboard_lines

    url, tunnel = dashboard_lines("127.0.0.1:8266", host="gpu-node-7")
    assert url == "Ray dashboard: http://127.0.0.1:8266"
    assert "ssh -N -L 8266:127.0.0.1:8266" in tunnel and tunnel.split("#")[0].rstrip().endswith("gpu-node-7")
    assert dashboard_lines("http://127.0.0.1:9000/")[0].endswith("http://127.0.0.1:9000/")
    assert "not available" in dashboard_lines(None)[0]
