"""Tiny learnable HH -> 4b HDF5 files in the SPANet layout, for the trainer/CLI/predict/export tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from spanet2.physics.kinematics import p4_to_ptetaphim, ptetaphim_to_p4

__all__ = [
    "EVENT_YAML",
    "OPTIONS",
    "make_events",
    "write_event_file",
    "write_topology",
    "write_options",
    "trained_run",
]

EVENT_YAML = """\
INPUTS:
  SEQUENTIAL:
    Source:
      mass: log_normalize
      pt: log_normalize
      eta: normalize
      phi: normalize
      btag: none
  GLOBAL:
    Kappa:
      kappa: none
EVENT:
  h1:
    - b1
    - b2
  h2:
    - b1
    - b2
PERMUTATIONS:
  EVENT:
    - [h1, h2]
  h1:
    - [b1, b2]
  h2:
    - [b1, b2]
CLASSIFICATIONS:
  EVENT:
    - signal
"""

# A network small enough that an epoch of a few hundred events takes about a second on one core.
OPTIONS = {
    "hidden_dim": 16,
    "initial_embedding_dim": 8,
    "num_embedding_layers": 2,
    "num_encoder_layers": 1,
    "num_branch_embedding_layers": 1,
    "num_branch_encoder_layers": 1,
    "num_jet_embedding_layers": 0,
    "num_jet_encoder_layers": 0,
    "num_detector_layers": 1,
    "num_classification_layers": 1,
    "num_attention_heads": 2,
    "batch_size": 64,
    "epochs": 2,
    "learning_rate": 0.003,
    "learning_rate_warmup_epochs": 0.5,
    "assignment_loss_scale": 1.0,
    "classification_loss_scale": 1.0,
    "detection_loss_scale": 0.0,
    "partial_events": True,
    "l2_penalty": 0.0001,
    "gradient_clip": 1.0,
    "dropout": 0.1,
    "train_validation_split": 0.8,
    "num_dataloader_workers": 0,
    "seed": 1,
}


def _decay(
    higgs_p4: np.ndarray, rng: np.random.Generator, b_mass: float = 4.8
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic H -> b b in the Higgs rest frame, boosted to the lab. higgs_p4 (M, 4) -> two (M, 4)."""
    m = np.sqrt(np.clip(higgs_p4[:, 0] ** 2 - (higgs_p4[:, 1:] ** 2).sum(1), 1.0, None))
    p_star = np.sqrt(np.clip(m**2 / 4 - b_mass**2, 0.0, None))
    cos_t = rng.uniform(-1, 1, len(m))
    phi = rng.uniform(-np.pi, np.pi, len(m))
    sin_t = np.sqrt(1 - cos_t**2)
    direction = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)  # (M, 3)
    e_star = np.sqrt(p_star**2 + b_mass**2)
    beta = higgs_p4[:, 1:] / higgs_p4[:, :1]  # (M, 3)
    beta2 = (beta**2).sum(1)
    gamma = 1.0 / np.sqrt(1.0 - beta2)
    out = []
    for sign in (1.0, -1.0):
        p = sign * p_star[:, None] * direction  # (M, 3)
        bp = (beta * p).sum(1)
        coef = np.where(beta2 > 0, (gamma - 1.0) * bp / np.where(beta2 > 0, beta2, 1.0), 0.0)
        p_lab = p + (coef + gamma * e_star)[:, None] * beta
        e_lab = gamma * (e_star + bp)
        out.append(np.concatenate([e_lab[:, None], p_lab], axis=1))
    return out[0], out[1]


def make_events(
    n_events: int, *, seed: int, n_pad: int = 10, signal_fraction: float = 0.5
) -> dict[str, np.ndarray]:
    """A learnable toy: signal = two 125 GeV resonances -> b b + 0-3 extra jets; background = 4-7 random jets.

    Returns the HDF5 contract dict (INPUTS, TARGETS with -1 for unmatched, CLASSIFICATIONS, WEIGHTS, TRUTH).
    """
    rng = np.random.default_rng(seed)
    n = n_events
    is_signal = rng.random(n) < signal_fraction
    n_extra = rng.integers(0, 4, n)
    jets_p4 = np.zeros((n, n_pad, 4))
    origin = np.full((n, n_pad), -1)  # which target slot (0..3) a jet came from; -1 = extra jet
    # Higgs candidates (signal) or a random-mass pair system (background)
    higgs_pt = rng.uniform(40, 300, (n, 2))
    higgs_eta = rng.normal(0, 1.0, (n, 2))
    higgs_phi = rng.uniform(-np.pi, np.pi, (n, 2))
    higgs_mass = np.where(is_signal[:, None], 125.0, rng.uniform(30, 400, (n, 2)))
    for h in range(2):
        hp4 = ptetaphim_to_p4(higgs_pt[:, h], higgs_eta[:, h], higgs_phi[:, h], higgs_mass[:, h])
        b1, b2 = _decay(hp4, rng)
        jets_p4[:, 2 * h] = b1
        jets_p4[:, 2 * h + 1] = b2
        origin[:, 2 * h] = 2 * h
        origin[:, 2 * h + 1] = 2 * h + 1
    extra_pt = rng.uniform(20, 120, (n, 4))
    extra_eta = rng.normal(0, 1.5, (n, 4))
    extra_phi = rng.uniform(-np.pi, np.pi, (n, 4))
    jets_p4[:, 4:8] = ptetaphim_to_p4(extra_pt, extra_eta, extra_phi, rng.uniform(4, 15, (n, 4)))
    n_jets = 4 + n_extra
    present = np.arange(n_pad)[None, :] < n_jets[:, None]  # (N, J)
    pt, eta, phi, mass = p4_to_ptetaphim(jets_p4)
    pt = np.where(present, pt, 0.0)
    # order real jets by pT (descending), padding last
    order = np.argsort(np.where(present, -pt, np.inf), axis=1, kind="stable")  # (N, J)
    take = np.take_along_axis
    pt, eta, phi, mass = (take(x, order, 1) for x in (pt, eta, phi, mass))
    origin = take(np.where(present, origin, -1), order, 1)
    mask = take(present, order, 1)
    btag = (origin >= 0) | (rng.random((n, n_pad)) < 0.15)
    btag &= mask
    # targets: position of each b (daughters ascending); background has no targets
    position = np.full((n, 4), -1, dtype=np.int64)
    rows, cols = np.nonzero(origin >= 0)
    position[rows, origin[rows, cols]] = cols
    # a few signal events lose one b (1h events); background: all -1
    lost = is_signal & (rng.random(n) < 0.1)
    position[lost, 3] = -1
    position[~is_signal] = -1
    targets = {}
    for h in range(2):
        pair = np.sort(position[:, 2 * h : 2 * h + 2], axis=1)
        pair = np.where((pair < 0).any(1, keepdims=True), -1, pair)
        targets[f"TARGETS/h{h + 1}/b1"] = pair[:, 0]
        targets[f"TARGETS/h{h + 1}/b2"] = pair[:, 1]
    kappa = rng.choice(np.array([-1.0, 1.0, 5.0], dtype=np.float32), n)
    zero = ~mask
    out = {
        "INPUTS/Source/MASK": mask,
        "INPUTS/Source/mass": np.where(zero, 0, mass).astype(np.float32),
        "INPUTS/Source/pt": np.where(zero, 0, pt).astype(np.float32),
        "INPUTS/Source/eta": np.where(zero, 0, eta).astype(np.float32),
        "INPUTS/Source/phi": np.where(zero, 0, phi).astype(np.float32),
        "INPUTS/Source/btag": btag,
        "INPUTS/Kappa/kappa": kappa,
        "CLASSIFICATIONS/EVENT/signal": is_signal.astype(np.int64),
        "WEIGHTS/weight": np.where(is_signal, 0.01, 1.0).astype(np.float32),
        "TRUTH/n_jets": n_jets.astype(np.int16),
    }
    out.update(targets)
    return out


def write_event_file(
    path: str | Path, n_events: int, *, seed: int, n_pad: int = 10, drop: tuple[str, ...] = ()
) -> Path:
    """Write `make_events` to an HDF5 file (plain h5py, like upstream's files); `drop` omits datasets."""
    path = Path(path)
    data = make_events(n_events, seed=seed, n_pad=n_pad)
    with h5py.File(path, "w") as h5:
        for key, value in data.items():
            if key not in drop:
                h5.create_dataset(key, data=value)
    return path


def write_topology(path: str | Path, text: str = EVENT_YAML) -> Path:
    path = Path(path)
    path.write_text(text)
    return path


def write_options(
    path: str | Path, *, event_file: str | Path, training_file: str | Path, **overrides
) -> Path:
    import json

    values = dict(OPTIONS, event_info_file=str(event_file), training_file=str(training_file), **overrides)
    path = Path(path)
    path.write_text(json.dumps(values, indent=2))
    return path


_TRAINED: dict[str, Path] = {}


def trained_run(tmp_path_factory, *, epochs: int = 2) -> dict[str, Path]:
    """One small trained run shared by the CLI/predict/export tests of this process (cached).

    Returns {"run_dir", "event_file", "train_file", "test_file", "options_file", "root"}.
    """
    if "run_dir" in _TRAINED:
        return dict(_TRAINED)
    import torch

    from spanet2.training.options import load_options
    from spanet2.training.trainer import train

    root = tmp_path_factory.mktemp("trained_run")
    event_file = write_topology(root / "event.yaml")
    train_file = write_event_file(root / "train.h5", 400, seed=11)
    test_file = write_event_file(root / "test.h5", 150, seed=12)
    options_file = write_options(
        root / "options.json", event_file=event_file, training_file=train_file, epochs=epochs
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(load_options(options_file), log_dir=root / "logs", name="shared", progress=False)
    finally:
        torch.set_num_threads(threads)
    train_file.unlink()  # evaluation, prediction and export must need only the run directory and the test file
    _TRAINED.update(
        run_dir=result.run_dir,
        event_file=event_file,
        train_file=train_file,
        test_file=test_file,
        options_file=options_file,
        root=root,
    )
    return dict(_TRAINED)
