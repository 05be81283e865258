"""ONNX export + numpy decoder: parity with the in-framework assignments and scores."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import trainer_data as td

from spanet2.training.export import decode_numpy, run_onnx
from spanet2.training.predict import _batch_from_arrays
from spanet2.training.trainer import load_run, predict_arrays, symmetric_daughters

onnx = pytest.importorskip("onnx", reason="onnx is in the [dev] extra")
pytest.importorskip("onnxruntime", reason="onnxruntime is in the [dev] extra")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def exported(tmp_path_factory, run_cli):
    trained = td.trained_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    rc, stdout, err = run_cli("export", trained["run_dir"], out)
    assert rc == 0, err
    assert "Source_data" in stdout and "h1_assignment_log_probability" in stdout
    return trained, out


def _inputs(test_file, loaded, n=None):
    with h5py.File(test_file) as h5:
        names = loaded.topology.mask_paths() + loaded.topology.feature_paths()
        arrays = {k: h5[k][:n] for k in names}
    batch = _batch_from_arrays(test_file, arrays, loaded.topology, dict(loaded.normalization.n_jets), 0)
    feeds = {
        "Source_data": batch["sequential"]["Source"].numpy(),
        "Source_mask": batch["sequential_mask"]["Source"].numpy(),
        "Kappa_data": batch["global"]["Kappa"].numpy(),
    }
    return batch, feeds


def test_onnx_model_is_valid_and_self_describing(exported):
    trained, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["spanet2_particles"] == ["h1", "h2"]
    assert meta["spanet2_symmetric_daughters"] == [True, True]
    assert meta["spanet2_features"]["Source"] == ["mass", "pt", "eta", "phi", "btag"]
    assert meta["spanet2_n_jets"] == {"Source": 10}
    assert [i.name for i in model.graph.input] == ["Source_data", "Source_mask", "Kappa_data"]


@pytest.mark.parametrize("n_events", [1, 150])
def test_onnx_plus_numpy_decoder_reproduces_the_framework(exported, n_events):
    trained, path = exported
    loaded = load_run(trained["run_dir"])
    batch, feeds = _inputs(trained["test_file"], loaded, n_events)
    reference = predict_arrays(loaded, batch, output_vectors=True)
    outputs = run_onnx(path, feeds)
    log_probs = [outputs["h1_assignment_log_probability"], outputs["h2_assignment_log_probability"]]
    assert log_probs[0].shape == (n_events, 10, 10)
    assignment, probability = decode_numpy(
        log_probs,
        json.loads(
            {p.key: p.value for p in onnx.load(str(path)).metadata_props}["spanet2_symmetric_daughters"]
        ),
    )
    np.testing.assert_array_equal(assignment, reference["assignment"])  # exact: same jets, same order
    np.testing.assert_allclose(probability, reference["assignment_probability"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        outputs["EVENT_signal_probability"], reference["class:EVENT/signal"], atol=1e-5
    )
    np.testing.assert_allclose(
        outputs["detection_probability"], reference["detection_probability"], atol=1e-5
    )
    np.testing.assert_allclose(outputs["event_vector"], reference["event_vector"], atol=1e-4)
    np.testing.assert_allclose(outputs["particle_vectors"], reference["particle_vectors"], atol=1e-4)


def test_numpy_decoder_matches_torch_decoding_on_ties_and_padding():
    """Random log-probabilities with forced ties and forbidden cells: decode_numpy == the torch greedy decoder."""
    from spanet2.training.trainer import decode_with_probability

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 2, 6, 6)).round(1).astype(np.float32)  # rounding makes ties common
    logits = 0.5 * (logits + logits.transpose(0, 1, 3, 2))
    n_jets = rng.integers(2, 7, 200)
    valid = (np.arange(6)[None, :, None] < n_jets[:, None, None]) & (
        np.arange(6)[None, None, :] < n_jets[:, None, None]
    )
    valid &= ~np.eye(6, dtype=bool)[None]
    logits = np.where(valid[:, None], logits, -np.inf)
    log_probs = logits - np.logaddexp.reduce(logits.reshape(200, 2, -1), axis=2)[..., None, None]
    ours, prob = decode_numpy(log_probs, [True, True])
    theirs, theirs_prob = decode_with_probability(
        [torch.from_numpy(log_probs[:, p]) for p in range(2)], [True, True]
    )
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_allclose(prob, theirs_prob.numpy(), rtol=1e-5)
    few = n_jets < 4  # fewer than four jets: the second Higgs stays unassigned
    assert (ours[few] == -1).any(axis=(1, 2)).all()


def test_symmetric_flags_follow_the_topology(tmp_path):
    from spanet2.events.topology import load_topology

    yaml = td.EVENT_YAML.replace("  h2:\n    - [b1, b2]\n", "")
    topology = load_topology(td.write_topology(tmp_path / "e.yaml", yaml))
    assert symmetric_daughters(topology) == [True, False]
