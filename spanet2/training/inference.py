"""A trained SPANet2 run rebuilt from its directory, and the network + greedy decoding on a batch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spanet2.errors import DataError
from spanet2.events.topology import EventTopology, load_topology
from spanet2.training import logdir
from spanet2.training.options import Options, load_options

__all__ = ["LoadedRun", "load_run", "predict_arrays", "decode_with_probability", "symmetric_daughters"]

logger = logging.getLogger(__name__)


def decode_with_probability(log_probs, symmetric: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding (decoding.greedy_decode) plus the chosen pair's probability.

    log_probs: P tensors (B, J, J). Returns (assignment (B, P, 2) int64, −1 = none; probability (B, P)
    float32 = P(cell i, j) (+ P(j, i) for symmetric daughters: the unordered pair), 0 where unassigned).
    """
    from spanet2.training.decoding import greedy_decode

    decoded = greedy_decode(log_probs, symmetric)
    assignment = decoded[0] if isinstance(decoded, tuple) else decoded  # (B, P, 2)
    stacked = torch.stack([lp.float() for lp in log_probs], dim=1)  # (B, P, J, J)
    i, j = assignment[..., 0], assignment[..., 1]  # (B, P)
    found = (i >= 0) & (j >= 0)
    i, j = i.clamp_min(0), j.clamp_min(0)
    flat = stacked.flatten(2)  # (B, P, J·J)
    n_jets = stacked.shape[-1]
    forward = flat.gather(2, (i * n_jets + j).unsqueeze(-1)).squeeze(-1).exp()  # (B, P)
    backward = flat.gather(2, (j * n_jets + i).unsqueeze(-1)).squeeze(-1).exp()  # (B, P)
    sym = torch.tensor(symmetric, dtype=torch.bool, device=stacked.device)
    probability = forward + torch.where(sym & (i != j), backward, torch.zeros_like(backward))
    return assignment, torch.where(found, probability, torch.zeros_like(probability))


def symmetric_daughters(topology: EventTopology) -> list[bool]:
    """Per particle (topology order): are its daughters interchangeable (a daughter permutation group > 1)?"""
    return [len(topology.daughter_permutation_group(p)) > 1 for p in topology.particle_names]


@dataclass
class LoadedRun:
    """A trained network rebuilt from its run directory: model (eval mode), options, topology, normalization."""

    run: logdir.RunDir
    model: torch.nn.Module
    options: Options
    topology: EventTopology
    normalization: Any
    checkpoint: Path
    device: torch.device


def load_run(
    run_dir: str | os.PathLike, *, gpu: bool = False, event_file: str | os.PathLike | None = None
) -> LoadedRun:
    """Rebuild the network of a run directory from options.json, event.yaml, normalization.json and the best
    (else last) checkpoint. Needs nothing else (not the training file)."""
    from spanet2.training.model import SPANet2
    from spanet2.training.normalization import load_normalization

    run = logdir.open_run_dir(run_dir)
    options = load_options(run.options)
    topology = load_topology(event_file or run.event_file)
    normalization = load_normalization(run.normalization)
    ckpt_path = logdir.checkpoint_for_inference(run)
    state = logdir.load_checkpoint(ckpt_path)
    model = SPANet2(options, topology, normalization)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise DataError(
            ckpt_path,
            "model",
            f"checkpoint does not match options.json/event.yaml: {str(exc).splitlines()[0]}",
        ) from None
    device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    if gpu and device.type == "cpu":
        logger.warning("--gpu given but CUDA is not available: running on the CPU")
    model.to(device).eval()
    return LoadedRun(run, model, options, topology, normalization, ckpt_path, device)


def predict_arrays(loaded: LoadedRun, batch: dict, *, output_vectors: bool = False) -> dict[str, np.ndarray]:
    """Run the network + greedy decoding on one batch (CPU tensors) → numpy arrays:
    assignment (B, P, 2), assignment_probability (B, P), detection_probability (B, P),
    class:<name> (B, C) softmax; with vectors: event_vector (B, D), particle_vectors (B, P, D)."""

    def move(obj):
        if isinstance(obj, torch.Tensor):
            return obj.to(loaded.device)
        if isinstance(obj, dict):
            return {k: move(v) for k, v in obj.items()}
        return obj

    with torch.no_grad():
        outputs = loaded.model(move(batch))
        assignment, probability = decode_with_probability(
            outputs.assignment_log_probs, symmetric_daughters(loaded.topology)
        )
        out = {
            "assignment": assignment.cpu().numpy(),
            "assignment_probability": probability.cpu().numpy(),
            "detection_probability": torch.sigmoid(outputs.detection_logits.float()).cpu().numpy(),
        }
        for name, logits in outputs.classification_logits.items():
            out[f"class:{name}"] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if output_vectors:
            out["event_vector"] = outputs.event_vector.float().cpu().numpy()
            out["particle_vectors"] = outputs.particle_vectors.float().cpu().numpy()
    return out
