"""Greedy non-overlapping jet assignment from the per-particle pair tensors (torch and numpy, identical)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["greedy_decode", "greedy_decode_numpy", "pairs_to_flat"]


def greedy_decode(log_probs: Sequence[Tensor] | Tensor, symmetric: Sequence[bool] | None = None) -> Tensor:
    """Assign jets to particles greedily, as upstream SPANet does, vectorised over events.

    Repeatedly take the most probable remaining cell among all unassigned particles' tensors, fix that
    particle, and forbid its two jets for every other particle. Ties go to the lowest flat index
    (particle, i, j), which the numpy twin reproduces exactly.

    log_probs: P tensors (N, J, J) (or one (N, P, J, J)) of log-probabilities, −inf = forbidden.
    symmetric: per particle, whether daughters are interchangeable (default all True): their indices
        are returned ascending.
    Returns the assignment (N, P, 2) int64: jet indices per particle, −1 where no allowed pair was left.
    """
    scores = torch.stack(list(log_probs), dim=1) if not isinstance(log_probs, Tensor) else log_probs
    scores = scores.detach().float().clone()  # (N, P, J, J)
    n_events, n_particles, n_jets, _ = scores.shape
    symmetric_t = (
        torch.ones(n_particles, dtype=torch.bool) if symmetric is None else torch.tensor(list(symmetric))
    )
    symmetric_t = symmetric_t.to(scores.device)
    assignment = torch.full((n_events, n_particles, 2), -1, dtype=torch.long, device=scores.device)
    rows = torch.arange(n_events, device=scores.device)
    jets = torch.arange(n_jets, device=scores.device)
    for _ in range(n_particles):
        best, flat_index = scores.view(n_events, -1).max(dim=1)  # (N,)
        found = torch.isfinite(best)  # (N,)
        particle = flat_index // (n_jets * n_jets)
        first = (flat_index // n_jets) % n_jets
        second = flat_index % n_jets
        swap = symmetric_t[particle] & (first > second)
        low, high = torch.where(swap, second, first), torch.where(swap, first, second)
        chosen = torch.stack([low, high], dim=1)  # (N, 2)
        current = assignment[rows, particle]  # (N, 2)
        assignment[rows, particle] = torch.where(found.unsqueeze(1), chosen, current)
        # forbid the chosen particle entirely and its two jets for every particle
        done = torch.zeros(n_events, n_particles, dtype=torch.bool, device=scores.device)
        done[rows, particle] = found
        used = ((jets == first.unsqueeze(1)) | (jets == second.unsqueeze(1))) & found.unsqueeze(1)  # (N, J)
        forbid = done[:, :, None, None] | used[:, None, :, None] | used[:, None, None, :]  # (N, P, J, J)
        scores.masked_fill_(forbid, float("-inf"))
    return assignment


def greedy_decode_numpy(log_probs: np.ndarray, symmetric: Sequence[bool] | None = None) -> np.ndarray:
    """The numpy twin of `greedy_decode` (for ONNX users): log_probs (N, P, J, J) → assignment (N, P, 2)."""
    scores = np.array(log_probs, dtype=np.float32, copy=True)
    n_events, n_particles, n_jets, _ = scores.shape
    symmetric_a = np.ones(n_particles, dtype=bool) if symmetric is None else np.asarray(symmetric, dtype=bool)
    assignment = np.full((n_events, n_particles, 2), -1, dtype=np.int64)
    rows = np.arange(n_events)
    jets = np.arange(n_jets)
    for _ in range(n_particles):
        flat = scores.reshape(n_events, -1)  # (N, P·J·J)
        flat_index = flat.argmax(axis=1)
        best = flat[rows, flat_index]
        found = np.isfinite(best)
        particle = flat_index // (n_jets * n_jets)
        first = (flat_index // n_jets) % n_jets
        second = flat_index % n_jets
        swap = symmetric_a[particle] & (first > second)
        chosen = np.stack([np.where(swap, second, first), np.where(swap, first, second)], axis=1)
        assignment[rows[found], particle[found]] = chosen[found]
        done = np.zeros((n_events, n_particles), dtype=bool)
        done[rows[found], particle[found]] = True
        used = ((jets == first[:, None]) | (jets == second[:, None])) & found[:, None]
        forbid = done[:, :, None, None] | used[:, None, :, None] | used[:, None, None, :]
        scores[forbid] = -np.inf
    return assignment


def pairs_to_flat(assignment: np.ndarray | Tensor) -> np.ndarray:
    """(N, P, 2) → (N, 2P) numpy int64, e.g. [h1b1, h1b2, h2b1, h2b2] for HH (the metrics' layout)."""
    if isinstance(assignment, Tensor):
        assignment = assignment.cpu().numpy()
    n_events = assignment.shape[0]
    return np.asarray(assignment, dtype=np.int64).reshape(n_events, -1)  # (N, 2P)
