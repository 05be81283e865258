"""SPANet2 network: shapes, exact symmetry, padding masked, normalisation buffers, every block type."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tr_synthetic import HH_TOPOLOGY, hh_topology, make_arrays, one_torch_thread

from spanet2.errors import ConfigError
from spanet2.events.topology import parse_topology
from spanet2.training.model import SPANet2, embedding_dims
from spanet2.training.normalization import (
    NormalizationStats,
    fit_input_statistics,
    identity_statistics,
    load_normalization,
    save_normalization,
)
from spanet2.training.options import Options

SMALL = dict(
    hidden_dim=16,
    initial_embedding_dim=4,
    num_attention_heads=2,
    num_encoder_layers=2,
    num_branch_embedding_layers=1,
    num_branch_encoder_layers=1,
    num_jet_encoder_layers=1,
    num_jet_embedding_layers=1,
    num_detector_layers=1,
    num_classification_layers=1,
)


def _batch(n: int = 64, jets: int = 10, seed: int = 0) -> dict:
    arrays = make_arrays(n, jets=jets, seed=seed)
    features = np.stack([arrays[f"INPUTS/Source/{f}"] for f in ("mass", "pt", "eta", "phi", "btag")], -1)
    return {
        "sequential": {"Source": torch.from_numpy(features.astype(np.float32))},
        "sequential_mask": {"Source": torch.from_numpy(arrays["INPUTS/Source/MASK"])},
        "global": {"Kappa": torch.from_numpy(arrays["INPUTS/Kappa/kappa"][:, None])},
    }


def _model(seed: int = 0, **changes) -> SPANet2:
    torch.manual_seed(seed)
    topology = hh_topology()
    model = SPANet2(Options(**{**SMALL, **changes}), topology, identity_statistics(topology))
    return model.eval()


def test_output_shapes_and_normalised_log_probs():
    model = _model()
    batch = _batch()
    out = model(batch)
    assert len(out.assignment_log_probs) == 2
    for lp in out.assignment_log_probs:
        assert lp.shape == (64, 10, 10)
        total = torch.logsumexp(lp.view(64, -1), dim=-1)
        torch.testing.assert_close(total, torch.zeros(64), atol=1e-5, rtol=0)
    assert out.detection_logits.shape == (64, 2)
    assert out.classification_logits["EVENT/signal"].shape == (64, 2)
    assert out.event_vector.shape == (64, 16) and out.particle_vectors.shape == (64, 2, 16)


def test_attention_exactly_symmetric_and_padding_never_possible():
    model = _model()
    batch = _batch()
    mask = batch["sequential_mask"]["Source"]
    for lp in model(batch).assignment_log_probs:
        assert torch.equal(lp, lp.transpose(1, 2))  # b1 <-> b2: bit-for-bit
        forbidden = ~(mask[:, :, None] & mask[:, None, :]) | torch.eye(10, dtype=torch.bool)
        assert torch.isneginf(lp[forbidden]).all()
        assert torch.isfinite(lp[~forbidden]).all()


def test_non_symmetric_daughters_are_not_symmetrised():
    config = copy.deepcopy(HH_TOPOLOGY)
    config["PERMUTATIONS"] = {"EVENT": [["h1", "h2"]]}
    topology = parse_topology(config)
    torch.manual_seed(0)
    model = SPANet2(Options(**SMALL), topology, identity_statistics(topology)).eval()
    lp = model(_batch()).assignment_log_probs[0]
    finite = torch.isfinite(lp)
    assert not torch.allclose(lp[finite], lp.transpose(1, 2)[finite])


def test_padding_content_is_ignored_and_jets_are_equivariant():
    model = _model()
    batch = _batch()
    out = model(batch)
    noisy = copy.deepcopy(batch)
    mask = noisy["sequential_mask"]["Source"]
    noisy["sequential"]["Source"][~mask] = 1234.0  # garbage in padded slots
    out_noisy = model(noisy)
    for a, b in zip(out.assignment_log_probs, out_noisy.assignment_log_probs, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        out.classification_logits["EVENT/signal"], out_noisy.classification_logits["EVENT/signal"]
    )
    # swapping two real jets (0 <-> 1; every event has >= 4) permutes rows and columns of the tensors
    swapped = copy.deepcopy(batch)
    order = torch.tensor([1, 0] + list(range(2, 10)))
    swapped["sequential"]["Source"] = swapped["sequential"]["Source"][:, order]
    swapped["sequential_mask"]["Source"] = swapped["sequential_mask"]["Source"][:, order]
    out_swapped = model(swapped)
    for a, b in zip(out.assignment_log_probs, out_swapped.assignment_log_probs, strict=True):
        torch.testing.assert_close(a[:, order][:, :, order], b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.event_vector, out_swapped.event_vector, atol=1e-5, rtol=1e-5)


def test_events_with_fewer_than_two_jets_give_no_nan():
    model = _model()
    batch = _batch(8)
    batch["sequential_mask"]["Source"][:4] = False
    batch["sequential_mask"]["Source"][:2, 0] = True  # one jet
    out = model(batch)
    for lp in out.assignment_log_probs:
        assert not torch.isnan(lp).any()
        assert torch.isneginf(lp[:4]).all()
    assert torch.isfinite(out.classification_logits["EVENT/signal"]).all()


@pytest.mark.parametrize("block", ["Basic", "Resnet", "Gated", "GRU"])
@pytest.mark.parametrize("transformer", ["Standard", "NormFirst", "Gated"])
def test_every_block_type_trains(block, transformer):
    model = _model(
        linear_block_type=block,
        transformer_type=transformer,
        dropout=0.1,
        split_symmetric_attention=(block != "Gated"),
    )
    model.train()
    out = model(_batch(16))
    loss = (
        sum(-lp.clamp_min(-30).mean() for lp in out.assignment_log_probs)
        + out.classification_logits["EVENT/signal"].sum()
    )
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "detector" not in n)
    for lp in out.assignment_log_probs:
        assert torch.equal(lp, lp.transpose(1, 2))


@pytest.mark.parametrize("norm", ["BatchNorm", "MaskedBatchNorm", "None"])
def test_every_normalization_trains_and_ignores_padding(norm):
    model = _model(normalization=norm).train()
    batch = _batch(32)
    out = model(batch)
    loss = sum(-lp.clamp_min(-30).mean() for lp in out.assignment_log_probs)
    loss.backward()
    model.eval()
    out = model(batch)
    assert torch.isfinite(out.classification_logits["EVENT/signal"]).all()
    for lp in out.assignment_log_probs:
        assert torch.equal(lp, lp.transpose(1, 2))


def test_unknown_normalization_is_a_config_error():
    with pytest.raises(ConfigError, match="normalization"):
        _model(normalization="GroupNorm")


def test_embedding_widths():
    # upstream: in -> initial, doubling while the double stays below hidden (at most max_layers), -> hidden
    assert embedding_dims(16, 32, 10) == [16, 32]
    assert embedding_dims(16, 128, 10) == [16, 32, 64, 128]
    assert embedding_dims(16, 128, 1) == [16, 32, 128]
    assert embedding_dims(16, 128, 0) == [16, 128]
    assert embedding_dims(16, 8, 10) == [16, 8]


def test_normalisation_statistics_are_buffers_and_json(tmp_path):
    arrays = make_arrays(500, seed=4)
    mask = arrays["INPUTS/Source/MASK"]
    values = np.stack([arrays[f"INPUTS/Source/{f}"] for f in ("mass", "pt", "eta", "phi", "btag")], -1)
    stats = fit_input_statistics(
        ("mass", "pt", "eta", "phi", "btag"),
        (True, True, False, False, False),
        (True, True, True, True, False),
        values,
        mask,
    )
    # log(x+1) then standardised over real jets only; std < 1e-5 → 1; "none" left raw
    assert stats.mean[0] == pytest.approx(np.log1p(values[..., 0][mask]).mean(), rel=1e-6)
    assert stats.std[2] == pytest.approx(values[..., 2][mask].std(), rel=1e-6)
    assert (stats.mean[4], stats.std[4]) == (0.0, 1.0)
    flat = fit_input_statistics(("c",), (False,), (True,), np.full((10, 3, 1), 7.0), np.ones((10, 3), bool))
    assert flat.std == (1.0,) and flat.mean == (7.0,)
    topology = hh_topology()
    base = identity_statistics(topology)
    normalization = NormalizationStats(
        {"Source": stats, "Kappa": base.inputs["Kappa"]}, {"EVENT/signal": 3}, {"Source": 10}
    )
    path = tmp_path / "normalization.json"
    save_normalization(normalization, path)
    assert load_normalization(path) == normalization
    model = SPANet2(Options(**SMALL), topology, normalization)
    state = model.state_dict()
    assert torch.allclose(
        state["embedding.inputs.Source.normalizer.mean"], torch.tensor(stats.mean, dtype=torch.float32)
    )
    assert model(_batch(4)).classification_logits["EVENT/signal"].shape == (4, 3)
    normalised = model.embedding.inputs["Source"].normalizer(torch.from_numpy(values), torch.from_numpy(mask))
    real = normalised[torch.from_numpy(mask)]
    torch.testing.assert_close(real[:, :4].mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(real[:, :4].std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert (normalised[~torch.from_numpy(mask)] == 0).all()


def test_fused_and_matmul_attention_agree(monkeypatch):
    import spanet2.training.model as model_module

    model = _model(transformer_type="Standard")
    batch = _batch(16)
    reference = model(batch)
    monkeypatch.setattr(model_module, "FUSED_ATTENTION_ON_CPU", True)
    fused = model(batch)
    for a, b in zip(reference.assignment_log_probs, fused.assignment_log_probs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reference.event_vector, fused.event_vector, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_bf16_autocast_runs_and_backpropagates(monkeypatch, fused):
    import spanet2.training.model as model_module

    monkeypatch.setattr(model_module, "FUSED_ATTENTION_ON_CPU", fused)
    model = _model(linear_block_type="GRU", transformer_type="Gated").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_batch(8))
    lp = out.assignment_log_probs[0]
    assert not torch.isnan(lp).any() and torch.equal(lp, lp.transpose(1, 2))
    (out.classification_logits["EVENT/signal"].float().sum() - lp.clamp_min(-30).mean()).backward()


def test_same_seed_same_model_and_outputs():
    a, b = _model(seed=5), _model(seed=5)
    batch = _batch(8)
    assert torch.equal(a(batch).assignment_log_probs[0], b(batch).assignment_log_probs[0])


_ = one_torch_thread  # autouse fixture (imported so pytest applies it here)


def test_sparse_dropout_is_bernoulli_with_the_right_rate_and_scale():
    from spanet2.training.model import SparseDropout

    torch.manual_seed(1)
    p = 0.0059
    layer = SparseDropout(p).train()
    x = torch.ones(400, 500, 10, requires_grad=True)  # 2M elements
    y = layer(x)
    dropped = (y == 0).double().mean().item()
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped - p) < 5 * sigma
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))
    # positions are uniform: both halves of the tensor lose about the same share
    half = x.numel() // 2
    flat = (y == 0).flatten().double()
    assert abs(flat[:half].mean().item() - flat[half:].mean().item()) < 8 * sigma
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x·mask·scale)/dx = mask·scale
    assert layer.eval()(x) is x
    tiny = SparseDropout(p).train()(torch.ones(3))
    assert tiny.shape == (3,)
