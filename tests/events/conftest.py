"""Fixtures for the events tests: hh4b event file and HDF5 files in upstream SPANet's exact layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
HH4B_YAML = REPO / "configs" / "events" / "hh4b.yaml"


def upstream_arrays(n_events: int = 200, n_jets: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays exactly as in the authors' hh4b files: btag bool, signal int64, 10 jets, TARGETS int64 (-1)."""
    rng = np.random.default_rng(seed)
    n_real = rng.integers(4, n_jets + 1, n_events)
    mask = np.arange(n_jets)[None, :] < n_real[:, None]  # (N, J)
    pt = np.where(mask, rng.exponential(60.0, (n_events, n_jets)) + 20.0, 0.0).astype(np.float32)
    arrays = {
        "INPUTS/Source/MASK": mask,
        "INPUTS/Source/mass": np.where(mask, rng.uniform(5, 30, (n_events, n_jets)), 0).astype(np.float32),
        "INPUTS/Source/pt": pt,
        "INPUTS/Source/eta": np.where(mask, rng.uniform(-2.5, 2.5, (n_events, n_jets)), 0).astype(np.float32),
        "INPUTS/Source/phi": np.where(mask, rng.uniform(-np.pi, np.pi, (n_events, n_jets)), 0).astype(
            np.float32
        ),
        "INPUTS/Source/btag": mask & (rng.random((n_events, n_jets)) < 0.6),
        "INPUTS/Kappa/kappa": rng.choice([-5.0, 1.0, 5.0], n_events).astype(np.float32),
        "CLASSIFICATIONS/EVENT/signal": rng.integers(0, 2, n_events).astype(np.int64),
    }
    # distinct real jets per event: a random permutation of the first 4 slots, some unmatched (-1)
    perm = np.argsort(rng.random((n_events, 4)), axis=1)  # (N, 4) in 0..3 < n_real
    matched = rng.random((n_events, 4)) < 0.85
    targets = np.where(matched, perm, -1).astype(np.int64)
    for k, name in enumerate(["h1/b1", "h1/b2", "h2/b1", "h2/b2"]):
        arrays[f"TARGETS/{name}"] = targets[:, k]
    return arrays


def write_plain_h5(
    path: Path, arrays: dict[str, np.ndarray], rename: dict[str, str] | None = None, attrs: dict | None = None
) -> Path:
    """Write with plain h5py (not our writer); `rename` maps group names (e.g. TARGETS → SpecialKey.Targets)."""
    rename = rename or {}
    with h5py.File(path, "w") as h5:
        for name, value in arrays.items():
            parts = [rename.get(p, p) for p in name.split("/")]
            h5.create_dataset("/".join(parts), data=value)
        for k, v in (attrs or {}).items():
            h5.attrs[k] = v
    return path


@pytest.fixture
def hh4b_yaml() -> Path:
    return HH4B_YAML


@pytest.fixture
def upstream_file(tmp_path) -> Path:
    return write_plain_h5(tmp_path / "upstream.h5", upstream_arrays())


@pytest.fixture
def make_arrays():
    """Factory: `make_arrays(n_events=200, n_jets=10, seed=0) -> dict` in the upstream layout."""
    return upstream_arrays


@pytest.fixture
def write_h5():
    """Factory: `write_h5(path, arrays, rename=None, attrs=None) -> path` with plain h5py."""
    return write_plain_h5
