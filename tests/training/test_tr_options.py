"""Options: the 63 upstream keys with upstream defaults, exact JSON round trip, clear errors, shipped configs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from spanet2.errors import ConfigError
from spanet2.training import options as O
from spanet2.training.options import Options, load_options, save_options

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "options"

# The 63 keys of upstream SPANet v2's Options, in its order (SPANET.md).
UPSTREAM = """hidden_dim transformer_dim transformer_dim_scale initial_embedding_dim position_embedding_dim
num_embedding_layers num_encoder_layers num_branch_embedding_layers num_branch_encoder_layers
num_jet_embedding_layers num_jet_encoder_layers num_detector_layers num_regression_layers
num_classification_layers split_symmetric_attention num_attention_heads transformer_activation
skip_connections initial_embedding_skip_connections linear_block_type transformer_type linear_activation
normalization masking linear_prelu_activation event_info_file training_file validation_file testing_file
normalize_features limit_to_num_jets balance_particles balance_jets balance_classifications partial_events
dataset_limit dataset_randomization train_validation_split batch_size num_dataloader_workers
mask_sequence_vectors combine_pair_loss optimizer learning_rate focal_gamma combinatorial_scale
learning_rate_warmup_epochs learning_rate_cycles assignment_loss_scale detection_loss_scale kl_loss_scale
regression_loss_scale classification_loss_scale balance_losses l2_penalty gradient_clip dropout epochs
num_gpu verbose_output usable_gpus trial_time trial_output_dir""".split()


def test_every_upstream_key_and_the_extras():
    assert len(UPSTREAM) == 63
    assert list(O.UPSTREAM_KEYS) == UPSTREAM
    assert set(O.SPANET2_KEYS) == {
        "seed",
        "engine",
        "lr_schedule",
        "precision",
        "deepspeed_config",
        "zero_stage",
        "compile",
        "patience",
    }


def test_defaults_are_upstreams():
    opts = Options()
    expected = dict(
        hidden_dim=128,
        transformer_dim_scale=2.0,
        initial_embedding_dim=16,
        num_embedding_layers=10,
        num_encoder_layers=4,
        num_branch_embedding_layers=4,
        num_branch_encoder_layers=4,
        num_jet_encoder_layers=0,
        num_detector_layers=1,
        num_attention_heads=4,
        linear_block_type="GRU",
        transformer_type="Gated",
        linear_activation="GELU",
        normalization="LayerNorm",
        masking="Filling",
        partial_events=False,
        dataset_limit=1.0,
        train_validation_split=0.95,
        batch_size=4096,
        combine_pair_loss="min",
        optimizer="AdamW",
        learning_rate=0.001,
        learning_rate_warmup_epochs=1.0,
        assignment_loss_scale=1.0,
        classification_loss_scale=0.0,
        epochs=100,
        seed=0,
        engine="single",
        lr_schedule="linear",
        precision="32",
        zero_stage=0,
        compile=False,
    )
    for key, value in expected.items():
        assert getattr(opts, key) == value, key
    with pytest.raises(AttributeError):
        opts.hidden_dim = 3  # frozen


def test_round_trip_is_exact(tmp_path):
    opts = Options(
        hidden_dim=48,
        learning_rate=0.00659,
        dropout=0.0059,
        partial_events=True,
        trial_time="x",
        lr_schedule="cosine",
        engine="ddp",
        training_file="a b/ü.h5",
        gradient_clip=1e-7,
    )
    first = tmp_path / "a.json"
    save_options(opts, first)
    loaded = load_options(first)
    assert loaded == opts
    second = tmp_path / "b.json"
    save_options(loaded, second)
    assert first.read_text() == second.read_text()
    assert set(json.loads(first.read_text())) == set(UPSTREAM) | set(O.SPANET2_KEYS)


def test_unknown_keys_warn_naming_them(tmp_path, caplog):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"hidden_dimm": 64, "learning_rate": 0.01, "zzz": 1}))
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="hidden_dimm"):
        opts = load_options(path)
    assert opts.learning_rate == 0.01 and opts.hidden_dim == 128
    assert "hidden_dimm" in caplog.text and "zzz" in caplog.text


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("hidden_dim", "64", "integer"),
        ("hidden_dim", True, "integer"),  # bools are not ints
        ("hidden_dim", 64.0, "integer"),
        ("learning_rate", "0.1", "number"),
        ("learning_rate", False, "number"),
        ("partial_events", 2, "boolean"),
        ("partial_events", "true", "boolean"),
        ("optimizer", 3, "string"),
        ("combine_pair_loss", "max", "one of"),
        ("engine", "horovod", "one of"),
        ("train_validation_split", 1.5, "fraction"),
        ("num_attention_heads", 5, "divisible"),
        ("dropout", -0.1, ">= 0"),
    ],
)
def test_wrong_values_fail_naming_file_key_and_expectation(tmp_path, key, value, expected):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(ConfigError) as info:
        load_options(path)
    message = str(info.value)
    assert str(path) in message and expected in message
    assert info.value.key in (key, "num_attention_heads")
    assert "\n" not in message


def test_upstream_conventions_are_accepted(tmp_path):
    path = tmp_path / "up.json"
    path.write_text(json.dumps({"partial_events": 1, "balance_jets": 0, "learning_rate": 1, "dropout": 0}))
    opts = load_options(path)
    assert opts.partial_events is True and opts.balance_jets is False
    assert opts.learning_rate == 1.0 and isinstance(opts.learning_rate, float)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{hidden_dim: 3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_options(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_options(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_options(bad)


def test_replace_is_type_checked():
    opts = Options().replace(hidden_dim=32, learning_rate=1)
    assert opts.hidden_dim == 32 and opts.learning_rate == 1.0
    with pytest.raises(ConfigError, match="hidden_dim"):
        Options().replace(hidden_dim="32")


def test_shipped_configs(recwarn):
    tuned = load_options(CONFIGS / "spanet2_mixing_kappa.json")
    assert (
        tuned.hidden_dim,
        tuned.num_encoder_layers,
        tuned.num_branch_encoder_layers,
        tuned.num_branch_embedding_layers,
        tuned.num_jet_encoder_layers,
        tuned.num_detector_layers,
    ) == (32, 8, 2, 3, 2, 0)
    assert (tuned.learning_rate, tuned.l2_penalty, tuned.gradient_clip, tuned.dropout) == (
        0.00659,
        0.000374,
        0.425,
        0.0059,
    )
    assert (tuned.batch_size, tuned.epochs, tuned.partial_events, tuned.balance_particles) == (
        2048,
        50,
        True,
        True,
    )
    assert tuned.assignment_loss_scale == 1.0 and tuned.classification_loss_scale == 1.0
    assert tuned.event_info_file == "configs/events/hh4b.yaml"
    kappa5 = load_options(CONFIGS / "spanet2_kappa5.json")
    assert kappa5.classification_loss_scale == 0.0 and kappa5.assignment_loss_scale == 1.0
    off = load_options(CONFIGS / "spanet2_assignment_off.json")
    assert off.assignment_loss_scale == 0.0 and off.classification_loss_scale == 1.0
    old = load_options(CONFIGS / "spanet1_defaults.json")
    assert (old.hidden_dim, old.learning_rate, old.num_attention_heads) == (128, 0.0007, 8)
    assert not [w for w in recwarn if "unknown option" in str(w.message)]


def test_choice_names_are_read_as_upstream_spells_them(tmp_path):
    """Upstream lower-cases names and drops '_' and spaces (create_activation, its block factories): the
    note's own options file says "linear_activation": "gelu"."""
    import json

    from spanet2.training.options import load_options

    path = tmp_path / "upstream.json"
    path.write_text(json.dumps({"linear_activation": "gelu", "transformer_activation": "GELU",
                                "normalization": "layer_norm", "linear_block_type": "resnet",
                                "transformer_type": "Norm First", "masking": "multiplicative"}))  # fmt: skip
    opts = load_options(path)
    assert (opts.linear_activation, opts.transformer_activation, opts.normalization) == ("GELU", "gelu", "LayerNorm")
    assert (opts.linear_block_type, opts.transformer_type, opts.masking) == ("Resnet", "NormFirst", "Multiplicative")
    path.write_text(json.dumps({"linear_activation": "swish"}))
    with pytest.raises(ConfigError, match="linear_activation.*swish"):
        load_options(path)
