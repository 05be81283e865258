"""Small synthetic HH -> 4b files in the SPANet layout for the model/loss/dataset tests (MODEL area)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spanet2.events.topology import parse_topology

__all__ = ["HH_TOPOLOGY", "hh_topology", "make_arrays", "write_file", "one_torch_thread"]

HH_TOPOLOGY = {
    "INPUTS": {
        "SEQUENTIAL": {
            "Source": {
                "mass": "log_normalize",
                "pt": "log_normalize",
                "eta": "normalize",
                "phi": "normalize",
                "btag": "none",
            }
        },
        "GLOBAL": {"Kappa": {"kappa": "none"}},
    },
    "EVENT": {"h1": ["b1", "b2"], "h2": ["b1", "b2"]},
    "PERMUTATIONS": {"EVENT": [["h1", "h2"]], "h1": [["b1", "b2"]], "h2": [["b1", "b2"]]},
    "CLASSIFICATIONS": {"EVENT": ["signal"]},
}


def hh_topology():
    return parse_topology(HH_TOPOLOGY, path="hh.yaml")


def make_arrays(n: int, *, jets: int = 10, seed: int = 0, learnable: bool = True) -> dict[str, np.ndarray]:
    """Events with 4..jets real jets (left-aligned); signal events (label 1) have both Higgs matched
    (a share only one), background none. With `learnable`, a Higgs's two jets share an eta (±0.05)
    and the pair's masses sum to ~125, so a network can learn the pairing."""
    rng = np.random.default_rng(seed)
    n_jets = rng.integers(4, jets + 1, n)
    mask = np.arange(jets)[None, :] < n_jets[:, None]  # (N, J)
    pt = rng.uniform(20, 300, (n, jets)).astype(np.float32)
    eta = rng.uniform(-2.5, 2.5, (n, jets)).astype(np.float32)
    phi = rng.uniform(-np.pi, np.pi, (n, jets)).astype(np.float32)
    mass = rng.uniform(5, 30, (n, jets)).astype(np.float32)
    btag = rng.random((n, jets)) < 0.7
    label = (rng.random(n) < 0.6).astype(np.int64)
    targets = np.full((n, 4), -1, dtype=np.int64)
    order = np.argsort(rng.random((n, jets)) + ~mask * 10, axis=1)[:, :4]  # 4 distinct real jets
    targets[label == 1] = order[label == 1]
    partial = (label == 1) & (rng.random(n) < 0.25)
    targets[partial, 2:] = -1
    if learnable:
        rows = np.flatnonzero(label == 1)
        for h in range(2):
            a, b = targets[rows, 2 * h], targets[rows, 2 * h + 1]
            ok = b >= 0
            r = rows[ok]
            eta[r, b[ok]] = eta[r, a[ok]] + rng.normal(0, 0.05, ok.sum())
            mass[r, a[ok]] = 60.0 + h
            mass[r, b[ok]] = 65.0 - h
    for arr in (pt, eta, phi, mass):
        arr[~mask] = 0.0
    btag[~mask] = False
    kappa = rng.choice([-5.0, 1.0, 5.0], n).astype(np.float32)
    return {
        "INPUTS/Source/MASK": mask,
        "INPUTS/Source/mass": mass,
        "INPUTS/Source/pt": pt,
        "INPUTS/Source/eta": eta,
        "INPUTS/Source/phi": phi,
        "INPUTS/Source/btag": btag,
        "INPUTS/Kappa/kappa": kappa,
        "TARGETS/h1/b1": targets[:, 0],
        "TARGETS/h1/b2": targets[:, 1],
        "TARGETS/h2/b1": targets[:, 2],
        "TARGETS/h2/b2": targets[:, 3],
        "CLASSIFICATIONS/EVENT/signal": label,
        "TRUTH/kappa": np.where(label == 1, kappa, np.nan).astype(np.float32),
    }


def write_file(path: Path, arrays: dict[str, np.ndarray], *, drop: tuple[str, ...] = ()) -> Path:
    with h5py.File(path, "w") as h5:
        for name, value in arrays.items():
            if name not in drop:
                h5.create_dataset(name, data=value)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster than two, and much faster on a shared, loaded machine
    (OpenMP threads wait for each other). Restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
