"""Search configurations: the note's spaces, parsing, validation, and bad inputs rejected before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from spanet2.errors import ConfigError, InputError
from spanet2.hpc import search_space
from spanet2.hpc.search_space import load_search_config, optuna_space, override_search_config

REPO = Path(__file__).resolve().parents[2]


def test_public_api():
    assert set(search_space.__all__) == {
        "MODELS",
        "OBJECTIVES",
        "Objective",
        "Parameter",
        "SearchConfig",
        "load_search_config",
        "objective_for",
        "option_names",
        "optuna_space",
        "override_search_config",
    }


def test_shipped_spanet2_space_is_the_notes():
    config = load_search_config(REPO / "configs/tune/spanet2.yaml")
    space = {p.name: p.to_dict() for p in config.space}
    assert space == {
        "learning_rate": {"loguniform": [1e-5, 1e-2]},
        "dropout": {"uniform": [0.0, 0.5]},
        "gradient_clip": {"uniform": [0.0, 0.5]},
        "l2_penalty": {"uniform": [0.0, 5e-4]},
        "hidden_dim": {"choice": [16, 32, 64, 128, 256]},
        "num_encoder_layers": {"randint": [2, 8]},
        "num_branch_encoder_layers": {"randint": [2, 8]},
        "num_classification_layers": {"randint": [1, 5]},
    }
    assert (config.model, config.num_samples, config.epochs) == ("spanet2", 100, 10)
    assert config.objective.metric == "val_loss" and config.objective.mode == "min"
    assert config.scheduler == "asha"


def test_shipped_dnn_space_is_the_notes():
    config = load_search_config(REPO / "configs/tune/dnn.yaml")
    assert {p.name: p.to_dict() for p in config.space} == {
        "learning_rate": {"loguniform": [1e-5, 1e-1]},
        "hidden_dim": {"choice": [16, 32, 64, 128, 256]},
        "n_layers": {"randint": [1, 5]},
    }
    assert (config.model, config.num_samples, config.pairing) == ("dnn", 100, "min-dr")


@pytest.mark.parametrize("name", ["spanet2.yaml", "dnn.yaml"])
def test_yaml_round_trip_is_exact(tmp_path, name):
    config = load_search_config(REPO / "configs/tune" / name)
    copy = tmp_path / name
    copy.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert load_search_config(copy).replace(path=None) == config.replace(path=None)


def test_points_to_evaluate_and_max_failures_round_trip(tmp_path):
    points = [{"learning_rate": 1e-3, "hidden_dim": 32}, {"dropout": 0.0}]
    config = load_search_config(_write(tmp_path, points_to_evaluate=points, max_failures=0))
    assert config.points_to_evaluate == tuple(points) and config.max_failures == 0
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert load_search_config(copy).replace(path=None) == config.replace(path=None)
    assert load_search_config(REPO / "configs/tune/spanet2.yaml").max_failures == 2  # the default


def test_optuna_space_kinds_and_bounds():
    config = load_search_config(REPO / "configs/tune/spanet2.yaml")
    space = optuna_space(config.space)
    assert space["learning_rate"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert space["dropout"] == FloatDistribution(0.0, 0.5)
    assert space["num_encoder_layers"] == IntDistribution(2, 8)
    assert space["hidden_dim"] == CategoricalDistribution([16, 32, 64, 128, 256])


def _write(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO / "configs/tune/spanet2.yaml").read_text())
    raw["options"] = str(REPO / raw["options"])
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"space": {"learning_rat": {"loguniform": [1e-5, 1e-2]}}}, "space.learning_rat", "not an option"),
        ({"space": {"dropout": {"uniform": [0.3, 0.3]}}}, "space.dropout", "empty range"),
        ({"space": {"num_encoder_layers": {"randint": [8, 2]}}}, "space.num_encoder_layers", "empty range"),
        ({"space": {"hidden_dim": {"choice": []}}}, "space.hidden_dim", "non-empty"),
        ({"space": {"learning_rate": {"loguniform": [0.0, 1e-2]}}}, "space.learning_rate", "low > 0"),
        ({"space": {"dropout": {"normal": [0, 1]}}}, "space.dropout", "unknown distribution"),
        ({"space": {}}, "space", "non-empty mapping"),
        ({"objective": "accuracy_of_everything"}, "objective", "unknown objective"),
        ({"num_samples": 0}, "num_samples", "integer >= 1"),
        ({"resources_per_trial": {"cpu": 0, "gpu": 0}}, "resources_per_trial", "not both 0"),
        ({"scheduler": {"type": "hyperband"}}, "scheduler", "asha or fifo"),
        ({"overrides": {"epochz": 3}}, "overrides.epochz", "not an option"),
        ({"overrides": {"dropout": 0.1}}, "overrides.dropout", "also searched"),
        ({"engine": "horovod"}, "engine", "single, ddp or deepspeed"),
        ({"resources_per_trial": {"cpu": 1, "workers": 2}}, "engine", "need engine ddp or deepspeed"),
        ({"bogus_key": 1}, "bogus_key", "unknown key"),
        ({"max_failures": -1}, "max_failures", "integer >= 0"),
        ({"points_to_evaluate": {"dropout": 0.1}}, "points_to_evaluate", "list of mappings"),
        ({"points_to_evaluate": [{"epochs": 3}]}, "points_to_evaluate[0].epochs", "not searched"),
        ({"points_to_evaluate": [{"dropout": 0.9}]}, "points_to_evaluate[0].dropout", "outside [0.0, 0.5]"),
        ({"points_to_evaluate": [{"hidden_dim": 48}]}, "points_to_evaluate[0].hidden_dim", "not one of"),
        (
            {"points_to_evaluate": [{"dropout": 0.1}, {"num_encoder_layers": 2.5}]},
            "points_to_evaluate[1].num_encoder_layers",
            "expected an integer",
        ),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path, changes, key, words):
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        load_search_config(path)
    assert err.value.key == key
    assert err.value.file == str(path)
    assert words in err.value.message


def test_dnn_rejects_pairing_objective_and_workers(tmp_path):
    raw = yaml.safe_load((REPO / "configs/tune/dnn.yaml").read_text())
    path = tmp_path / "dnn.yaml"
    path.write_text(yaml.safe_dump(dict(raw, objective="val_pairing_efficiency")))
    with pytest.raises(ConfigError, match="does not pair jets"):
        load_search_config(path)
    path.write_text(yaml.safe_dump(dict(raw, resources_per_trial={"cpu": 1, "workers": 2})))
    with pytest.raises(ConfigError, match="several workers"):
        load_search_config(path)


def test_overrides_from_the_command_line():
    config = load_search_config(REPO / "configs/tune/spanet2.yaml")
    changed = override_search_config(config, num_samples=3, epochs=1, objective="auc", seed=None)
    assert (changed.num_samples, changed.epochs, changed.grace_period) == (3, 1, 1)
    assert changed.objective.metric == "val_auc" and changed.objective.mode == "max"
    assert changed.seed == config.seed
    with pytest.raises(InputError, match=">= 1"):
        override_search_config(config, epochs=0)


# ---- the CLI: each bad input is one line on stderr, exit 2, and no Ray and no output folder ------------------
@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the command gets as far as connecting to / starting Ray."""

    def refuse(*args, **kwargs):
        raise AssertionError("a Ray session was opened for a bad input")

    monkeypatch.setattr("spanet2.hpc.cluster.ray_session", refuse)


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"space": {"not_an_option": {"uniform": [0, 1]}}}, "space.not_an_option: not an option"),
        ({"space": {"dropout": {"uniform": [0.5, 0.1]}}}, "space.dropout: empty range"),
        ({"objective": "val_f1"}, "objective: unknown objective 'val_f1'"),
    ],
)
def test_cli_bad_input_exits_2_before_ray(tmp_path, run_cli, no_ray, changes, expect):
    path = _write(tmp_path, **changes)
    rc, out, err = run_cli("tune", path, "--output", tmp_path / "out")
    assert rc == 2
    assert err.count("\n") == 1 and expect in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_cli_missing_config_and_missing_data(tmp_path, run_cli, no_ray):
    rc, _, err = run_cli("tune", tmp_path / "nope.yaml", "--output", tmp_path / "out")
    assert rc == 2 and err.count("\n") == 1 and "nope.yaml: search configuration file not found" in err
    # the shipped config points at data/classification_train.h5, which does not exist here
    path = _write(tmp_path, training_file=str(tmp_path / "absent.h5"))
    rc, _, err = run_cli("tune", path, "--output", tmp_path / "out")
    assert rc == 2 and err.count("\n") == 1 and "training_file: file not found" in err
    rc, _, err = run_cli("tune", path, "--output", tmp_path / "out", "--resume")
    assert rc == 2 and "--resume: no search to resume here" in err
    rc, _, err = run_cli("tune", path, "--objective", "f1", "--output", tmp_path / "out")
    assert rc == 2 and "--objective: objective: unknown objective 'f1'" in err
    assert not (tmp_path / "out").exists()


def test_cli_space_corner_that_breaks_the_options(tmp_path, run_cli, no_ray):
    # hidden_dim 30 is not divisible by the 4 attention heads: caught at the corner check, before Ray
    path = _write(tmp_path, space={"hidden_dim": {"choice": [16, 30]}}, training_file=str(REPO / "README.md"))
    rc, _, err = run_cli("tune", path, "--output", tmp_path / "out")
    assert rc == 2 and err.count("\n") == 1 and "space.num_attention_heads" in err and "high end" in err
    assert not (tmp_path / "out").exists()
