"""Greedy decoding: most probable cell first, never reuses a jet, never assigns padding, numpy twin identical."""

from __future__ import annotations

import numpy as np
import torch
from tr_synthetic import one_torch_thread

from spanet2.training.decoding import greedy_decode, greedy_decode_numpy, pairs_to_flat


def _random_log_probs(n: int, jets: int, particles: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P, J, J) symmetric log-probabilities with padding and the diagonal at −inf; and the jet mask."""
    gen = torch.Generator().manual_seed(seed)
    n_jets = torch.randint(2, jets + 1, (n,), generator=gen)
    mask = torch.arange(jets)[None, :] < n_jets[:, None]  # (N, J)
    logits = torch.randn(n, particles, jets, jets, generator=gen)
    logits = logits + logits.transpose(2, 3)
    valid = mask[:, None, :, None] & mask[:, None, None, :] & ~torch.eye(jets, dtype=torch.bool)
    logits = logits.masked_fill(~valid, float("-inf"))
    flat = logits.view(n, particles, -1)
    has = valid.expand(n, particles, jets, jets).reshape(n, particles, -1).any(-1, keepdim=True)
    log_probs = torch.where(has, flat.log_softmax(-1), torch.full_like(flat, float("-inf")))
    return log_probs.view(n, particles, jets, jets), mask


def test_never_reuses_a_jet_and_never_assigns_padding():
    log_probs, mask = _random_log_probs(3000, 10, 2, seed=1)
    assignment = greedy_decode(list(log_probs.unbind(1)))
    assert assignment.shape == (3000, 2, 2) and assignment.dtype == torch.long
    flat = pairs_to_flat(assignment)  # (N, 4)
    n_real = mask.sum(1).numpy()
    for row, real in zip(flat, n_real, strict=True):
        used = row[row >= 0]
        assert len(set(used.tolist())) == len(used)  # no jet twice
        assert (used < real).all()  # only real jets (left-aligned here)
    # enough jets → every particle assigned; 2–3 jets → exactly one particle assigned
    assigned = (flat >= 0).reshape(-1, 2, 2).all(-1).sum(1)
    assert (assigned[n_real >= 4] == 2).all()
    assert (assigned[n_real < 4] == 1).all()
    assert (assignment[..., 0] <= assignment[..., 1]).all()  # daughters ascending


def test_numpy_twin_is_identical():
    log_probs, _ = _random_log_probs(2000, 8, 3, seed=2)
    torch_result = greedy_decode(log_probs).numpy()
    numpy_result = greedy_decode_numpy(log_probs.numpy())
    np.testing.assert_array_equal(torch_result, numpy_result)


def test_greedy_takes_the_best_cell_first():
    jets = 5
    lp = torch.full((1, 2, jets, jets), -20.0)
    lp[0, :, range(jets), range(jets)] = float("-inf")
    # particle 1 likes (0, 1) most of all; particle 0 likes (1, 2) best but must give up jet 1 → (3, 4)
    lp[0, 1, 0, 1] = lp[0, 1, 1, 0] = -0.1
    lp[0, 0, 1, 2] = lp[0, 0, 2, 1] = -0.5
    lp[0, 0, 3, 4] = lp[0, 0, 4, 3] = -2.0
    result = greedy_decode(lp)
    assert result.tolist() == [[[3, 4], [0, 1]]]


def test_non_symmetric_particle_keeps_order():
    lp = torch.full((1, 1, 3, 3), -5.0)
    lp[0, 0, 2, 0] = -0.01
    assert greedy_decode(lp, symmetric=[False]).tolist() == [[[2, 0]]]
    assert greedy_decode(lp).tolist() == [[[0, 2]]]
    np.testing.assert_array_equal(greedy_decode_numpy(lp.numpy(), symmetric=[False]), [[[2, 0]]])


_ = one_torch_thread  # autouse fixture (imported so pytest applies it here)
