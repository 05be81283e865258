"""Tiny HH→4b-like toy event files (vectorised) for the baselines tests: real HDF5, SPANet layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from spanet2.physics import features as hl
from spanet2.physics.kinematics import p4_to_ptetaphim, ptetaphim_to_p4

KAPPAS = np.array([-5.0, -3.0, -1.0, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0, 12.0])
MAX_JETS = 10


def _decay(
    parent_p4: np.ndarray, mass: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two massless-ish daughters (N, 4) each of a parent (N, 4), isotropic in the parent frame."""
    n = len(parent_p4)
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    e_star = mass / 2
    p_star = np.sqrt(np.maximum(e_star**2 - 4.8**2, 0))
    d = np.stack([e_star, p_star * sin_t * np.cos(phi), p_star * sin_t * np.sin(phi), p_star * cos_t], axis=1)
    beta = parent_p4[:, 1:] / parent_p4[:, :1]  # (N, 3)
    b2 = np.sum(beta**2, axis=1)
    gamma = 1 / np.sqrt(1 - b2)
    out = []
    for sign in (1, -1):
        q = d.copy()
        q[:, 1:] *= sign
        bp = np.sum(beta * q[:, 1:], axis=1)
        g2 = np.where(b2 > 0, (gamma - 1) / np.where(b2 > 0, b2, 1), 0)
        e = gamma * (q[:, 0] + bp)
        p = q[:, 1:] + (g2 * bp + gamma * q[:, 0])[:, None] * beta
        out.append(np.concatenate([e[:, None], p], axis=1))
    return out[0], out[1]


def make_toy_events(n_signal: int, n_background: int, seed: int = 0, *, with_extra: bool = True) -> dict:
    """SPANet-layout arrays: signal = two 125 GeV resonances → 4 b jets, background = 4 random b jets."""
    rng = np.random.default_rng(seed)
    n = n_signal + n_background
    label = np.r_[np.ones(n_signal, np.int64), np.zeros(n_background, np.int64)]
    # signal: two Higgs bosons
    h_pt = rng.exponential(120, (n_signal, 2)) + 40
    h_eta = rng.normal(0, 1.0, (n_signal, 2))
    h_phi0 = rng.uniform(-np.pi, np.pi, n_signal)
    h_phi = np.stack([h_phi0, h_phi0 + np.pi + rng.normal(0, 0.3, n_signal)], axis=1)
    h_p4 = ptetaphim_to_p4(h_pt, h_eta, h_phi, np.full_like(h_pt, 125.0))  # (N, 2, 4)
    b = np.zeros((n_signal, 4, 4))
    for h in range(2):
        b[:, 2 * h], b[:, 2 * h + 1] = _decay(h_p4[:, h], np.full(n_signal, 125.0), rng)
    s_pt, s_eta, s_phi, _ = p4_to_ptetaphim(b)
    s_mass = np.full_like(s_pt, 4.8) + rng.exponential(5, s_pt.shape)
    # background: four b jets with no resonant structure
    g_pt = rng.exponential(60, (n_background, 4)) + 40
    g_eta = rng.normal(0, 1.2, (n_background, 4))
    g_phi = rng.uniform(-np.pi, np.pi, (n_background, 4))
    g_mass = np.full_like(g_pt, 4.8) + rng.exponential(5, g_pt.shape)
    b_pt, b_eta, b_phi, b_mass = (
        np.concatenate([x, y]) for x, y in ((s_pt, g_pt), (s_eta, g_eta), (s_phi, g_phi), (s_mass, g_mass))
    )
    # extra light jets: 0..3
    n_extra = rng.integers(0, 4, n)
    e_pt = rng.exponential(30, (n, 3)) + 20
    e_eta = rng.normal(0, 1.5, (n, 3))
    e_phi = rng.uniform(-np.pi, np.pi, (n, 3))
    e_mass = rng.exponential(6, (n, 3)) + 2
    pt = np.concatenate([b_pt, e_pt], axis=1)
    eta = np.concatenate([b_eta, e_eta], axis=1)
    phi = np.concatenate([b_phi, e_phi], axis=1)
    mass = np.concatenate([b_mass, e_mass], axis=1)
    real = np.concatenate([np.ones((n, 4), bool), np.arange(3)[None, :] < n_extra[:, None]], axis=1)
    btag = np.concatenate([np.ones((n, 4), bool), rng.random((n, 3)) < 0.05], axis=1) & real
    order = np.argsort(np.where(real, -pt, np.inf), axis=1, kind="stable")  # pT-descending, padding last
    pt, eta, phi, mass, btag, real = (
        np.take_along_axis(x, order, axis=1) for x in (pt, eta, phi, mass, btag, real)
    )
    position = np.argsort(order, axis=1)[:, :4]  # where the four b jets ended up (N, 4)
    targets = np.where(label[:, None] == 1, position, -1)
    pad = MAX_JETS - pt.shape[1]

    def padded(x, fill=0):
        return np.pad(np.where(real, x, fill), ((0, 0), (0, pad)), constant_values=fill)

    kappa = rng.choice(KAPPAS, n).astype(np.float32)
    weight = np.where(label == 1, 0.577 / max(n_signal, 1), 6060.0 / max(n_background, 1))
    terms = np.zeros((n, 3))
    terms[label == 1] = np.array([70.3874, -50.4111, 11.0595]) / 31.05 * weight[label == 1, None]
    arrays = {
        "INPUTS/Source/MASK": padded(real, False).astype(bool),
        "INPUTS/Source/pt": padded(pt).astype(np.float32),
        "INPUTS/Source/eta": padded(eta).astype(np.float32),
        "INPUTS/Source/phi": padded(phi).astype(np.float32),
        "INPUTS/Source/mass": padded(mass).astype(np.float32),
        "INPUTS/Source/btag": padded(btag, False).astype(bool),
        "INPUTS/Kappa/kappa": kappa,
        "TARGETS/h1/b1": np.minimum(targets[:, 0], targets[:, 1]),
        "TARGETS/h1/b2": np.maximum(targets[:, 0], targets[:, 1]),
        "TARGETS/h2/b1": np.minimum(targets[:, 2], targets[:, 3]),
        "TARGETS/h2/b2": np.maximum(targets[:, 2], targets[:, 3]),
        "CLASSIFICATIONS/EVENT/signal": label,
        "WEIGHTS/weight": weight,
        "WEIGHTS/kappa_terms": terms,
        "TRUTH/n_jets": real.sum(axis=1).astype(np.int16),
        "TRUTH/process": label.astype(np.int8),
    }
    if with_extra:
        arrays.update(
            {
                "GLOBAL_EXTRA/met": (rng.exponential(20, n) + 15 * label).astype(np.float32),
                "GLOBAL_EXTRA/met_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
                "GLOBAL_EXTRA/n_electrons": rng.poisson(0.05, n).astype(np.int16),
                "GLOBAL_EXTRA/n_muons": rng.poisson(0.05, n).astype(np.int16),
            }
        )
    shuffle = rng.permutation(n)
    return {k: v[shuffle] for k, v in arrays.items()}


def write_h5(path, arrays: dict, attrs: dict | None = None):
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value
    return path


def select(arrays: dict, rows: np.ndarray) -> dict:
    return {k: v[rows] for k, v in arrays.items()}


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory):
    """{'mixed', 'signal', 'background', 'train'} HDF5 paths (small, 13 TeV) and the mixed arrays."""
    base = tmp_path_factory.mktemp("bl_toy")
    mixed = make_toy_events(400, 400, seed=1)
    label = mixed["CLASSIFICATIONS/EVENT/signal"]
    files = {
        "mixed": write_h5(base / "mixed.h5", mixed, {"sqrt_s_tev": 13.0}),
        "signal": write_h5(base / "signal.h5", select(mixed, label == 1), {"sqrt_s_tev": 13.0}),
        "background": write_h5(base / "background.h5", select(mixed, label == 0), {"sqrt_s_tev": 13.0}),
        "train": write_h5(base / "train.h5", make_toy_events(1500, 1500, seed=2)),
        "noextra": write_h5(base / "noextra.h5", make_toy_events(200, 200, seed=3, with_extra=False)),
    }
    return files, mixed


def write_predictions(path, arrays, seed, *, copy_inputs=True, drop=0):
    """A predictions-layout file: TARGETS = truth (signal) / a random valid pairing (background) + scores."""
    rng = np.random.default_rng(seed)
    n = len(arrays["CLASSIFICATIONS/EVENT/signal"]) - drop
    label = arrays["CLASSIFICATIONS/EVENT/signal"][:n]
    truth = np.stack([arrays[k][:n] for k in hl.PAIRING_PATHS], axis=1)
    random_pairing = np.argsort(rng.random((n, 4)), axis=1)  # jets 0..3 always exist in the toy
    pairing = np.where((truth >= 0).all(axis=1, keepdims=True), truth, random_pairing)
    score = np.clip(0.7 * label + rng.normal(0.15, 0.2, n), 0, 1).astype(np.float32)
    with h5py.File(path, "w") as h5:
        for i, key in enumerate(hl.PAIRING_PATHS):
            h5.create_dataset(key, data=pairing[:, i])
        h5.create_dataset("CLASSIFICATIONS/EVENT/signal", data=np.stack([1 - score, score], axis=1))
        h5.create_dataset("CLASSIFICATIONS/EVENT/signal_probability", data=score)
        if copy_inputs:
            for key in ("pt", "eta", "phi", "mass", "btag", "MASK"):
                h5.create_dataset(f"INPUTS/Source/{key}", data=arrays[f"INPUTS/Source/{key}"][:n])
    return path


@pytest.fixture(scope="session", name="write_predictions")
def write_predictions_fixture():
    """The `write_predictions(path, arrays, seed, *, copy_inputs=True, drop=0)` helper."""
    return write_predictions
