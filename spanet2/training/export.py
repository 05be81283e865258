"""ONNX export of a trained SPANet2 run, and a pure-numpy decoder that reproduces the in-framework assignments."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from spanet2.atomic import atomic_path

__all__ = ["ExportedNetwork", "export_onnx", "decode_numpy", "onnx_metadata", "run_onnx"]

logger = logging.getLogger(__name__)


class ExportedNetwork(nn.Module):
    """The SPANet2 network with flat tensor inputs/outputs (what the ONNX graph holds).

    Inputs, in order: per sequential input `<name>_data (B, J, F) float32` (raw features in YAML order;
    normalisation happens inside) and `<name>_mask (B, J) bool`; per global input `<name>_data (B, F)`.
    Outputs: per particle `<particle>_assignment_log_probability (B, J, J)` (−inf = forbidden cell),
    `detection_probability (B, P)`, per classification `<head>_probability (B, C)` (softmax; head "EVENT/signal"
    → "EVENT_signal"), `event_vector (B, D)`, `particle_vectors (B, P, D)`. Decode with `decode_numpy`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.sequential_names = list(model.sequential_names)
        self.global_names = list(model.global_names)
        self.particle_names = list(model.particle_names)
        self.classification_names = list(model.classification_names)

    def input_names(self) -> list[str]:
        names = []
        for name in self.sequential_names:
            names += [f"{name}_data", f"{name}_mask"]
        return names + [f"{name}_data" for name in self.global_names]

    def output_names(self) -> list[str]:
        return (
            [f"{p}_assignment_log_probability" for p in self.particle_names]
            + ["detection_probability"]
            + [f"{c.replace('/', '_')}_probability" for c in self.classification_names]
            + ["event_vector", "particle_vectors"]
        )

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        n_seq = len(self.sequential_names)
        batch: dict[str, dict[str, Tensor]] = {"sequential": {}, "sequential_mask": {}, "global": {}}
        for k, name in enumerate(self.sequential_names):
            batch["sequential"][name] = tensors[2 * k]
            batch["sequential_mask"][name] = tensors[2 * k + 1]
        for k, name in enumerate(self.global_names):
            batch["global"][name] = tensors[2 * n_seq + k]
        out = self.model(batch)
        return (
            *out.assignment_log_probs,
            torch.sigmoid(out.detection_logits),
            *[torch.softmax(out.classification_logits[c], dim=-1) for c in self.classification_names],
            out.event_vector,
            out.particle_vectors,
        )


def onnx_metadata(loaded) -> dict[str, str]:
    """What a user outside the framework needs: input/feature order, particles, symmetry, heads, padding."""
    from spanet2.training.inference import symmetric_daughters

    topology = loaded.topology
    features = {
        src.name: [f.name for f in src.features]
        for src in (*topology.sequential_inputs, *topology.global_inputs)
    }
    meta = {
        "spanet2_features": features,
        "spanet2_particles": list(topology.particle_names),
        "spanet2_daughters": {p.name: list(p.daughters) for p in topology.particles},
        "spanet2_symmetric_daughters": symmetric_daughters(topology),
        "spanet2_classifications": list(loaded.model.classification_names),
        "spanet2_n_jets": dict(loaded.normalization.n_jets),
        "spanet2_checkpoint": str(loaded.checkpoint),
        "spanet2_decoder": "spanet2.training.export.decode_numpy (greedy, non-overlapping)",
    }
    return {k: json.dumps(v) for k, v in meta.items()}


def _example_inputs(loaded, batch_size: int = 2) -> tuple[Tensor, ...]:
    n_jets = loaded.normalization.n_jets
    tensors: list[Tensor] = []
    for src in loaded.topology.sequential_inputs:
        j = int(n_jets.get(src.name, 10))
        tensors.append(torch.ones(batch_size, j, len(src.features)))
        mask = torch.zeros(batch_size, j, dtype=torch.bool)
        mask[:, : min(4, j)] = True
        tensors.append(mask)
    for src in loaded.topology.global_inputs:
        tensors.append(torch.zeros(batch_size, len(src.features)))
    return tuple(tensors)


def export_onnx(
    run_dir: str | os.PathLike, output_file: str | os.PathLike, *, opset: int = 17
) -> dict[str, Any]:
    """Export the best checkpoint of `run_dir` to ONNX (batch dimension dynamic; atomic write).

    Returns {"inputs": [...], "outputs": [...], "metadata": {...}}. The graph holds no decoder: run
    `decode_numpy` on the `*_assignment_log_probability` outputs (identical to the in-framework decoding).
    """
    import onnx

    from spanet2.training.inference import load_run

    loaded = load_run(run_dir)
    wrapper = ExportedNetwork(loaded.model.cpu()).eval()
    example = _example_inputs(loaded)
    inputs, outputs = wrapper.input_names(), wrapper.output_names()
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    with atomic_path(output_file) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            example,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
        model = _bool_eyelike_to_float(onnx.load(str(tmp)))
        metadata = onnx_metadata(loaded)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return {"inputs": inputs, "outputs": outputs, "metadata": metadata}


def _bool_eyelike_to_float(model):
    """onnxruntime has no boolean EyeLike kernel (what `torch.eye(n, dtype=torch.bool)` exports to):
    compute the identity in float and cast it to bool. Returns the patched model (same outputs)."""
    from onnx import TensorProto, helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    new_nodes = []
    for node in graph.node:
        if node.op_type != "EyeLike":
            new_nodes.append(node)
            continue
        source = producers.get(node.input[0])
        dtype = next((a.i for a in node.attribute if a.name == "dtype"), None)
        is_bool_input = (
            source is not None
            and source.op_type == "ConstantOfShape"
            and any(a.name == "value" and a.t.data_type == TensorProto.BOOL for a in source.attribute)
        )
        if not (is_bool_input or dtype == TensorProto.BOOL):
            new_nodes.append(node)
            continue
        float_input = node.input[0] + "_as_float"
        new_nodes.append(
            helper.make_node(
                "Cast", [node.input[0]], [float_input], to=TensorProto.FLOAT, name=node.name + "_input_cast"
            )
        )
        original_output = node.output[0]
        float_output = original_output + "_as_float"
        node.input[0] = float_input
        node.output[0] = float_output
        for attr in list(node.attribute):
            if attr.name == "dtype":
                node.attribute.remove(attr)
        new_nodes.append(node)
        new_nodes.append(
            helper.make_node(
                "Cast",
                [float_output],
                [original_output],
                to=TensorProto.BOOL,
                name=node.name + "_output_cast",
            )
        )
    del graph.node[:]
    graph.node.extend(new_nodes)
    return model


def decode_numpy(
    log_probs: Sequence[np.ndarray] | np.ndarray, symmetric: Sequence[bool] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy non-overlapping assignment in pure numpy, identical to the in-framework decoding.

    log_probs: the P `*_assignment_log_probability` outputs (N, J, J) (or one (N, P, J, J) array);
    symmetric: per particle (ONNX metadata "spanet2_symmetric_daughters"; default all True).
    Returns (assignment (N, P, 2) int64 jet indices, daughters ascending, −1 = none;
    probability (N, P) float32 of the chosen pairs).
    """
    from spanet2.training.decoding import greedy_decode_numpy

    stacked = (
        np.stack(list(log_probs), axis=1) if not isinstance(log_probs, np.ndarray) else log_probs
    )  # (N, P, J, J)
    stacked = stacked.astype(np.float32)
    decoded = greedy_decode_numpy(stacked, symmetric)
    assignment = decoded[0] if isinstance(decoded, tuple) else decoded  # (N, P, 2)
    n_events, n_particles, n_jets, _ = stacked.shape
    sym = np.ones(n_particles, dtype=bool) if symmetric is None else np.asarray(symmetric, dtype=bool)
    i, j = assignment[..., 0], assignment[..., 1]  # (N, P)
    found = (i >= 0) & (j >= 0)
    i, j = np.maximum(i, 0), np.maximum(j, 0)
    flat = stacked.reshape(n_events, n_particles, n_jets * n_jets)  # (N, P, J·J)
    with np.errstate(over="ignore"):
        forward = np.exp(np.take_along_axis(flat, (i * n_jets + j)[..., None], 2)[..., 0])
        backward = np.exp(np.take_along_axis(flat, (j * n_jets + i)[..., None], 2)[..., 0])
    probability = forward + np.where(sym[None, :] & (i != j), backward, 0.0)
    return assignment, np.where(found, probability, 0.0).astype(np.float32)


def run_onnx(onnx_file: str | os.PathLike, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an exported graph with onnxruntime (CPU): {input name: array} → {output name: array}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(onnx_file)), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))
