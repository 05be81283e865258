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


@pytest.mark.parametrize("block", ["Basic", "Resnet", "Gated", "GRU"])
@pytest.mark.parametrize("activation", ["ReLU", "PReLU", "ELU", "CELU", "GELU"])
def test_every_activation_trains_in_every_block(block, activation):
    """Sparse dropout (p < 0.05) on; PReLU has one slope per feature of (B, L, D) vectors (as upstream's
    (vectors, D) matrices), not per slot."""
    model = _model(linear_block_type=block, linear_activation=activation, dropout=0.01).train()
    out = model(_batch(16))
    loss = sum(-lp.clamp_min(-30).mean() for lp in out.assignment_log_probs) + out.event_vector.square().sum()
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "detector" not in n and "classifiers" not in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if activation == "PReLU":
        slopes = [m.weight for n, m in model.named_modules()
                  if isinstance(m, torch.nn.PReLU) and "detector" not in n and "classifiers" not in n]  # fmt: skip
        assert slopes and all(w.grad is not None and w.grad.abs().sum() > 0 for w in slopes)


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


def _outputs_and_grads(model: SPANet2, batch: dict, grouped: bool) -> tuple[list[torch.Tensor], dict]:
    model.group_by_length = grouped
    model.zero_grad(set_to_none=True)
    out = model(batch)
    finite = [torch.where(torch.isinf(lp), torch.zeros_like(lp), lp) for lp in out.assignment_log_probs]
    loss = sum(f.square().sum() for f in finite) + out.classification_logits["EVENT/signal"].square().sum()
    (loss + out.detection_logits.square().sum() + out.daughter_vectors.sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    values = [*out.assignment_log_probs, out.detection_logits, out.classification_logits["EVENT/signal"],
              out.event_vector, out.particle_vectors, out.daughter_vectors]  # fmt: skip
    return values, grads


@pytest.mark.parametrize("group_cost", [0, 300, 10**9])
def test_multiplicity_groups_give_the_padded_network_exactly(monkeypatch, group_cost):
    """Split by jet multiplicity (CPU speed path), outputs and gradients equal the padded forward's: the
    trimmed slots are padding, which nothing per event sees. BatchNorm heads still see the whole batch. In
    float64, so that the order of summation (float32 rounding, ~1e-4 on a gradient summed over all slots)
    does not hide a real difference: equal to 1e-9."""
    import spanet2.training.model as model_module

    monkeypatch.setattr(model_module, "GROUP_COST_SLOTS", group_cost)
    model = _model(dropout=0.0).double().train()  # train mode: the heads' BatchNorm uses batch statistics
    batch = _batch(n=96, jets=10, seed=3)
    batch["sequential"]["Source"] = batch["sequential"]["Source"].double()
    batch["global"]["Kappa"] = batch["global"]["Kappa"].double()
    mask = batch["sequential_mask"]["Source"]
    mask[5, :] = False  # an event with no jets
    mask[7, 2] = False  # a hole: not left-aligned
    mask[11, 1:] = False  # one jet
    mask[:, 9] = False  # the last slot is padding everywhere: even one group trims it
    batch["sequential"]["Source"][~mask] = 0.0
    lengths = (mask * torch.arange(1, 11)).amax(1)
    groups = model._length_groups([mask])
    assert groups is not None and sum(len(rows) for rows, _ in groups) == 96
    for rows, (n,) in groups:
        assert (lengths[rows] <= n).all() and n <= 9
    if group_cost == 0:  # no cost per group: one group per multiplicity
        assert len(groups) == len(torch.unique(lengths))
    if group_cost == 10**9:  # one group, trimmed to the longest event
        assert len(groups) == 1 and groups[0][1] == [9]
    padded, padded_grads = _outputs_and_grads(model, batch, grouped=False)
    grouped, grouped_grads = _outputs_and_grads(model, batch, grouped=True)
    for a, b in zip(padded, grouped, strict=True):
        assert a.shape == b.shape
        assert torch.equal(torch.isneginf(a), torch.isneginf(b))
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-7)
    assert padded_grads.keys() == grouped_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(grouped_grads[name], grad, atol=1e-9, rtol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def test_multiplicity_groups_are_off_where_they_would_not_be_exact():
    batch = _batch(n=32, jets=10)
    assert not _model(normalization="BatchNorm")._groups_by_length([batch["sequential"]["Source"]])
    assert not _model(normalization="MaskedBatchNorm")._groups_by_length([batch["sequential"]["Source"]])
    assert _model()._groups_by_length([batch["sequential"]["Source"]])
    full = torch.ones(32, 10, dtype=torch.bool)
    assert _model()._length_groups([full]) is None  # nothing to trim: the plain padded forward


def test_merge_lengths_finds_the_cheapest_consecutive_grouping(monkeypatch):
    """The dynamic programme against every way of cutting the sorted keys into consecutive groups."""
    import itertools

    import spanet2.training.model as model_module

    monkeypatch.setattr(model_module, "GROUP_COST_SLOTS", 500)
    rng = np.random.default_rng(0)

    def cost(keys, counts, members):
        longest = [max(keys[k][s] for k in members) for s in range(len(keys[0]))]
        return 500 + sum(counts[k] for k in members) * (sum(longest) + 2)

    for trial in range(30):
        n_inputs = 1 + trial % 2
        keys = sorted({tuple(rng.integers(0, 11, n_inputs).tolist()) for _ in range(rng.integers(1, 8))},
                      key=lambda k: (sum(k), k))  # fmt: skip
        keys = [list(k) for k in keys]
        counts = rng.integers(1, 800, len(keys)).tolist()
        segments = model_module._merge_lengths(keys, counts, extra=2)
        assert [k for members, _ in segments for k in members] == list(range(len(keys)))  # a partition, in order
        for members, trimmed in segments:
            assert trimmed == [max(keys[k][s] for k in members) for s in range(n_inputs)]
        got = sum(cost(keys, counts, members) for members, _ in segments)
        brute = min(
            sum(cost(keys, counts, range(a, b)) for a, b in itertools.pairwise([0, *cuts, len(keys)]))
            for r in range(len(keys))
            for cuts in itertools.combinations(range(1, len(keys)), r)
        )
        assert got == brute


@pytest.mark.parametrize("activation", ["GELU", "PReLU", "ReLU"])
def test_folded_dropout_gives_the_rescaled_dropout_exactly(activation):
    """SparseDropout's 1/(1 − p) folded into the next linear map (zeroing in place) draws the same elements
    as the plain rescaling dropout from the same random state and gives the same outputs and gradients."""
    from spanet2.training.model import SparseDropout, linear_block

    options = Options(**{**SMALL, "dropout": 0.02, "linear_activation": activation, "linear_block_type": "GRU"})
    torch.manual_seed(0)
    block = linear_block(16, 16, options, skip=True).train()
    assert isinstance(block.dropout, SparseDropout)
    assert block.fold_dropout == (activation != "ReLU")  # ReLU saves its output: no zeroing in place
    x = torch.randn(40, 7, 16)
    mask = torch.rand(40, 7) < 0.8
    results = []
    for folded in (False, True):
        block.fold_dropout = folded and activation != "ReLU"
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(1)
        out = block(xi, mask)
        out.pow(2).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in block.named_parameters()}))
    (out0, gx0, g0), (out1, gx1, g1) = results
    block.eval()
    assert not torch.allclose(out0, block(x, mask))  # the dropout dropped something
    torch.testing.assert_close(out1, out0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gx1, gx0, atol=1e-5, rtol=1e-4)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_attention_dropout_folded_into_the_softmax_matches_plain_dropout():
    from spanet2.training.model import SparseDropout, _SelfAttention

    torch.manual_seed(0)
    attention = _SelfAttention(16, 2, 0.03).train()
    x = torch.randn(30, 6, 16)
    torch.manual_seed(5)
    out = attention(x, None)
    # the reference: softmax, then SparseDropout's rescaling forward from the same random state
    torch.manual_seed(5)
    q, k, v = attention.qkv(x).view(30, 6, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, Dh)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1).reshape(60, 6, 6)
    weights = SparseDropout(0.03).train()(weights).view(30, 2, 6, 6)
    reference = attention.out((weights @ v).transpose(1, 2).reshape(30, 6, 16))
    assert (weights == 0).any()
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _double_batch(n: int, seed: int) -> dict:
    batch = _batch(n=n, jets=10, seed=seed)
    batch["sequential"]["Source"] = batch["sequential"]["Source"].double()
    batch["global"]["Kappa"] = batch["global"]["Kappa"].double()
    mask = batch["sequential_mask"]["Source"]
    mask[3, :] = False  # an event with no jets
    mask[4, 1] = False  # a hole
    batch["sequential"]["Source"][~mask] = 0.0
    return batch


@pytest.mark.parametrize("group_cost", [0, 10**9])
def test_parallel_groups_give_the_serial_network_exactly(monkeypatch, two_torch_threads, group_cost):
    """Groups side by side in two worker threads, forward and backward, equal the groups one after another and
    the padded network (float64, no dropout): the workers' gradients are summed in a fixed order. With one
    group (group_cost huge) the group is halved so that both workers have work."""
    import spanet2.training.model as model_module

    monkeypatch.setattr(model_module, "GROUP_COST_SLOTS", group_cost)
    model = _model(dropout=0.0).double().train()
    batch = _double_batch(96, seed=4)
    assert model._parallel_workers() == 2
    parallel, parallel_grads = _outputs_and_grads(model, batch, grouped=True)
    monkeypatch.setattr(model_module, "PARALLEL_GROUPS", False)
    assert model._parallel_workers() == 1
    serial, serial_grads = _outputs_and_grads(model, batch, grouped=True)
    padded, padded_grads = _outputs_and_grads(model, batch, grouped=False)
    for reference, reference_grads in ((serial, serial_grads), (padded, padded_grads)):
        for a, b in zip(reference, parallel, strict=True):
            assert torch.equal(torch.isneginf(a), torch.isneginf(b))
            torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-7)
        assert reference_grads.keys() == parallel_grads.keys()
        for name, grad in reference_grads.items():
            torch.testing.assert_close(parallel_grads[name], grad, atol=1e-9, rtol=1e-7, msg=lambda m, name=name: f"{name}: {m}")
    # without gradients (evaluation) the workers run under no_grad: the same outputs, no graph
    monkeypatch.setattr(model_module, "PARALLEL_GROUPS", True)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert not out.event_vector.requires_grad
    with torch.inference_mode():
        in_inference = model(batch).event_vector
    monkeypatch.setattr(model_module, "PARALLEL_GROUPS", False)
    with torch.no_grad():
        serial = model(batch).event_vector
    torch.testing.assert_close(out.event_vector, serial, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(in_inference, serial, atol=1e-9, rtol=1e-7)


def test_parallel_groups_with_dropout_are_reproducible_by_seed(two_torch_threads):
    """Each worker draws its dropout from a generator seeded from the global stream: the same seed gives the
    same outputs and gradients bit for bit, another seed other dropped elements."""
    model = _model(dropout=0.02).train()
    batch = _batch(n=128, jets=10, seed=2)

    def run(seed: int):
        torch.manual_seed(seed)
        return _outputs_and_grads(model, batch, grouped=True)

    (first, first_grads), (again, again_grads), (other, _) = run(1), run(1), run(2)
    assert model._parallel_workers() == 2
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(first_grads[name], again_grads[name]) for name in first_grads)
    assert not torch.equal(first[-3], other[-3])  # event vectors: the dropout differs between seeds
    model.eval()
    with torch.no_grad():
        assert not torch.equal(first[-3], model(batch).event_vector)  # and dropout did drop


def test_parallel_groups_are_off_where_draws_or_state_are_per_thread(monkeypatch, two_torch_threads):
    import spanet2.training.model as model_module

    assert _model(dropout=0.1).train()._parallel_workers() == 1  # nn.Dropout: torch's global stream
    assert _model(dropout=0.1).eval()._parallel_workers() == 2  # no dropout in evaluation
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _model()._parallel_workers() == 1
    torch.set_num_threads(1)
    assert _model()._parallel_workers() == 1
    torch.set_num_threads(8)
    assert _model()._parallel_workers() == model_module.MAX_GROUP_WORKERS


def test_groups_are_dealt_to_workers_by_cost():
    from spanet2.training.model import _bins, _split_groups

    rng = np.random.default_rng(1)
    for _ in range(50):
        costs = rng.integers(1, 1000, rng.integers(1, 9)).tolist()
        workers = int(rng.integers(1, 5))
        bins = _bins(costs, workers)
        assert sorted(i for b in bins for i in b) == list(range(len(costs)))  # a partition
        assert len(bins) == min(workers, len(costs)) and all(b == sorted(b) for b in bins)
        loads = [sum(costs[i] for i in b) for b in bins]
        assert max(loads) <= sum(costs) / len(bins) + max(costs)  # the greedy bound
    groups = [(torch.arange(0, 10), [4]), (torch.arange(10, 13), [7])]
    split = _split_groups(groups, 4)
    assert len(split) == 4
    assert torch.equal(torch.sort(torch.cat([rows for rows, _ in split])).values, torch.arange(13))
    assert sorted(tuple(lengths) for _, lengths in split) == [(4,), (4,), (4,), (7,)]
    assert len(_split_groups([(torch.arange(1), [3])], 2)) == 1  # one event cannot be split


def test_widened_attention_heads_give_the_same_attention(monkeypatch):
    """Heads widened with zero columns (torch's faster bmm for short sequences) change nothing: outputs and
    gradients equal the plain heads' in float64, with and without a key-padding bias."""
    import spanet2.training.model as model_module
    from spanet2.training.model import _head_width, _SelfAttention

    assert [_head_width(n, 8) for n in (4, 5, 6, 7, 8, 12)] == [8, 8, 12, 9, 8, 8]
    assert [_head_width(n, 16) for n in (3, 4, 5)] == [16, 16, 16]
    torch.manual_seed(0)
    attention = _SelfAttention(32, 4, 0.0).double().train()
    for length in (6, 7):
        x = torch.randn(20, length, 32, dtype=torch.float64)
        bias = torch.zeros(20, 1, 1, length, dtype=torch.float64)
        bias[:5, ..., -2:] = float("-inf")
        results = []
        for product in (model_module.SMALL_BMM_PRODUCT, 0):  # 0: never widened
            monkeypatch.setattr(model_module, "SMALL_BMM_PRODUCT", product)
            for key_bias in (None, bias):
                attention.zero_grad(set_to_none=True)
                xi = x.clone().requires_grad_(True)
                out = attention(xi, key_bias)
                out.pow(2).sum().backward()
                results.append((out, xi.grad, attention.qkv.weight.grad, attention.out.weight.grad))
        for widened, plain in zip(results[:2], results[2:], strict=True):
            for a, b in zip(widened, plain, strict=True):
                torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_gru_gate_is_the_gtrxl_gate():
    """GRUGate (bias folded, addmm, lerp) against the written-out GTrXL formulas, with a folded input scale."""
    from spanet2.training.model import GRUGate

    torch.manual_seed(0)
    gate = GRUGate(8).double()
    x, s = torch.randn(5, 3, 8, dtype=torch.float64), torch.randn(5, 3, 8, dtype=torch.float64)
    w_r, w_z, w_g = gate.input_proj.weight.split(8)
    b_r, b_z, b_g = gate.input_proj.bias.split(8)
    u_r, u_z = gate.skip_proj.weight.split(8)
    for scale in (1.0, 1.25):
        xs = scale * x
        r = torch.sigmoid(xs @ w_r.T + b_r + s @ u_r.T)
        z = torch.sigmoid(xs @ w_z.T + b_z + s @ u_z.T - gate.gate_bias)
        h = torch.tanh(xs @ w_g.T + b_g + (r * s) @ gate.candidate_proj.weight.T)
        torch.testing.assert_close(gate(x, s, x_scale=scale), (1 - z) * s + z * h, atol=1e-12, rtol=1e-10)
