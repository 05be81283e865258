"""Loss: invariant under h1 <-> h2 and b1 <-> b2 relabelling, partial events masked, scales switch tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tr_synthetic import hh_topology, one_torch_thread

from spanet2.training.losses import SPANet2Loss, compute_loss
from spanet2.training.model import ModelOutputs
from spanet2.training.options import Options


def _outputs(n: int = 32, jets: int = 6, seed: int = 0, requires_grad: bool = False) -> ModelOutputs:
    gen = torch.Generator().manual_seed(seed)
    log_probs = []
    for _ in range(2):
        logits = torch.randn(n, jets, jets, generator=gen)
        logits = 0.5 * (logits + logits.transpose(1, 2))
        logits = logits.masked_fill(torch.eye(jets, dtype=torch.bool), float("-inf"))
        logits.requires_grad_(requires_grad)
        log_probs.append(logits.view(n, -1).log_softmax(-1).view(n, jets, jets))
    cls = torch.randn(n, 2, generator=gen).requires_grad_(requires_grad)
    det = torch.randn(n, 2, generator=gen).requires_grad_(requires_grad)
    return ModelOutputs(log_probs, det, {"EVENT/signal": cls}, torch.zeros(n, 4), torch.zeros(n, 2, 4))


def _batch(n: int = 32, jets: int = 6, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n, jets)), axis=1)[:, :4]
    targets = torch.from_numpy(order.reshape(n, 2, 2).copy())
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[: n // 4, 1] = False  # partial events: h2 not reconstructable
    mask[-2:] = False  # background-like: nothing reconstructable
    targets[~mask] = -1
    labels = torch.from_numpy(rng.integers(0, 2, n))
    labels[:3] = -1
    return {
        "targets": targets,
        "target_mask": mask,
        "classifications": {"EVENT/signal": labels},
        "sequential_mask": {"Source": torch.ones(n, jets, dtype=torch.bool)},
    }


OPTS = Options(classification_loss_scale=1.0, detection_loss_scale=0.5)


def test_invariant_under_particle_and_daughter_relabelling():
    topology = hh_topology()
    outputs, batch = _outputs(), _batch()
    loss, parts = compute_loss(outputs, batch, OPTS, topology)
    swapped = dict(batch)
    swapped["targets"] = batch["targets"][:, [1, 0]]  # h1 <-> h2
    swapped["target_mask"] = batch["target_mask"][:, [1, 0]]
    loss_h, parts_h = compute_loss(outputs, swapped, OPTS, topology)
    assert torch.equal(loss, loss_h) and parts == parts_h
    flipped = dict(batch)
    flipped["targets"] = batch["targets"][:, :, [1, 0]]  # b1 <-> b2 in every Higgs
    assert torch.equal(compute_loss(outputs, flipped, OPTS, topology)[0], loss)


def test_assignment_value_by_hand_and_partial_masking():
    topology = hh_topology()
    outputs, batch = _outputs(), _batch()
    # slot h2 is improbable in the partial events, so their one Higgs goes to slot h1: unequal denominators
    outputs.assignment_log_probs[1][: 32 // 4] -= 20.0
    opts = Options(assignment_loss_scale=1.0)
    loss, parts = compute_loss(outputs, batch, opts, topology)
    lp = [x.detach() for x in outputs.assignment_log_probs]
    # per event: the relabelling (h1 <-> h2) with the smaller summed NLL; then one term per particle slot,
    # its mean over the events where that slot is reconstructable; the total is the mean of the terms
    sums, counts = [0.0, 0.0], [0, 0]
    for e in range(32):
        candidates = []
        for perm in ((0, 1), (1, 0)):
            per_slot = [None, None]
            for p in range(2):
                if batch["target_mask"][e, perm[p]]:
                    i, j = batch["targets"][e, perm[p]].tolist()
                    per_slot[p] = -(float(lp[p][e, i, j]) + math.log(2))
            candidates.append((sum(v for v in per_slot if v is not None), per_slot))
        _, best = min(candidates, key=lambda c: c[0])
        for p in range(2):
            if best[p] is not None:
                sums[p] += best[p]
                counts[p] += 1
    expected = 0.5 * (sums[0] / counts[0] + sums[1] / counts[1])
    assert counts[0] != counts[1]  # partial events make the two terms' denominators differ
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert parts["assignment_loss"] == pytest.approx(expected, rel=1e-5)
    # with classification on, the total is the mean of the three terms (a_h1 + a_h2 + c) / 3
    both, both_parts = compute_loss(outputs, batch, Options(classification_loss_scale=1.0), topology)
    assert float(both) == pytest.approx((2 * expected + both_parts["classification_loss"]) / 3, rel=1e-5)
    # a non-reconstructable particle's target value is irrelevant
    changed = dict(batch)
    changed["targets"] = batch["targets"].clone()
    changed["targets"][: 32 // 4, 1] = torch.tensor([0, 1])
    assert torch.equal(compute_loss(outputs, changed, opts, topology)[0], loss)


def test_combine_modes_and_focal():
    topology = hh_topology()
    outputs, batch = _outputs(), _batch()
    full = {**batch, "target_mask": torch.ones(32, 2, dtype=torch.bool)}  # equal denominators per particle
    full["targets"] = torch.from_numpy(np.argsort(np.random.default_rng(2).random((32, 6)), 1)[:, :4].reshape(32, 2, 2).copy())
    values = {
        mode: float(compute_loss(outputs, full, Options(combine_pair_loss=mode), topology)[0])
        for mode in ("min", "softmin", "mean")
    }
    assert values["min"] <= values["softmin"] <= values["mean"]
    focal = float(compute_loss(outputs, batch, Options(focal_gamma=2.0), topology)[0])
    assert 0 < focal < values["min"]


def test_scales_switch_tasks_off_but_keep_gradients_defined():
    topology = hh_topology()
    batch = _batch()
    outputs = _outputs(requires_grad=True)
    loss, parts = compute_loss(
        outputs, batch, Options(assignment_loss_scale=0.0, classification_loss_scale=1.0), topology
    )
    assert parts["assignment_loss"] == 0.0 and parts["detection_loss"] == 0.0
    labels = batch["classifications"]["EVENT/signal"]
    keep = labels >= 0
    expected = torch.nn.functional.cross_entropy(
        outputs.classification_logits["EVENT/signal"][keep], labels[keep]
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert outputs.detection_logits.grad is not None and (outputs.detection_logits.grad == 0).all()
    only_assignment = compute_loss(_outputs(), batch, Options(), topology)[1]
    assert (
        only_assignment["classification_loss"] == 0.0
        and only_assignment["loss"] == only_assignment["assignment_loss"]
    )


def test_detection_targets_follow_the_chosen_relabelling():
    topology = hh_topology()
    outputs, batch = _outputs(), _batch()
    opts = Options(assignment_loss_scale=0.0, detection_loss_scale=1.0)
    loss, _ = compute_loss(outputs, batch, opts, topology)
    loss_fn = SPANet2Loss(opts, topology)
    _, chosen = loss_fn._assignment(
        torch.stack(outputs.assignment_log_probs, 1), batch["targets"], batch["target_mask"], torch.ones(32)
    )
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs.detection_logits, chosen.float())
    torch.testing.assert_close(loss, expected)
    assert (chosen.sum(1) == batch["target_mask"].sum(1)).all()


def test_balance_weights_in_the_batch_are_used():
    topology = hh_topology()
    outputs, batch = _outputs(), _batch()
    weighted = dict(batch)
    weighted["assignment_weight"] = torch.ones(32) * 3.0
    weighted["classification_weight"] = {"EVENT/signal": torch.ones(32) * 2.0}
    # uniform weights change nothing (the loss is a weighted mean) ...
    torch.testing.assert_close(
        compute_loss(outputs, weighted, OPTS, topology)[0], compute_loss(outputs, batch, OPTS, topology)[0]
    )
    # ... zero weight on half of the events is the loss of the other half
    half = dict(batch)
    half["assignment_weight"] = torch.cat([torch.zeros(16), torch.ones(16)])
    sub = {
        k: (v[16:] if isinstance(v, torch.Tensor) else {n: t[16:] for n, t in v.items()})
        for k, v in batch.items()
    }
    sub_outputs = ModelOutputs(
        [lp[16:] for lp in outputs.assignment_log_probs],
        outputs.detection_logits[16:],
        {"EVENT/signal": outputs.classification_logits["EVENT/signal"][16:]},
        outputs.event_vector[16:],
        outputs.particle_vectors[16:],
    )
    opts = Options()
    torch.testing.assert_close(
        compute_loss(outputs, half, opts, topology)[0], compute_loss(sub_outputs, sub, opts, topology)[0]
    )


_ = one_torch_thread  # autouse fixture (imported so pytest applies it here)
