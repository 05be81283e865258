"""Dataset: split, filters, normalisation fitted on the training split only, clear DataErrors, a learning check."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tr_synthetic import hh_topology, make_arrays, one_torch_thread, write_file

from spanet2.errors import DataError
from spanet2.training import metrics as M
from spanet2.training.dataset import iter_test_batches, load_training_data, read_event_arrays
from spanet2.training.decoding import greedy_decode
from spanet2.training.losses import compute_loss
from spanet2.training.model import SPANet2
from spanet2.training.options import Options


@pytest.fixture
def hh_file(tmp_path):
    return write_file(tmp_path / "train.h5", make_arrays(400, seed=7))


def test_contiguous_split_and_normalisation_on_training_split_only(hh_file):
    topology = hh_topology()
    opts = Options(train_validation_split=0.75, partial_events=True)
    data = load_training_data(opts, topology, training_file=hh_file)
    assert (data.n_train, data.n_val) == (300, 100)
    arrays = make_arrays(400, seed=7)
    np.testing.assert_array_equal(data.train.sequential["Source"][:, :, 1], arrays["INPUTS/Source/pt"][:300])
    mask = arrays["INPUTS/Source/MASK"][:300]
    expected_mean = np.log1p(arrays["INPUTS/Source/pt"][:300][mask]).mean()
    assert data.normalization.inputs["Source"].mean[1] == pytest.approx(expected_mean, rel=1e-6)
    assert data.normalization.classification_classes == {"EVENT/signal": 2}
    assert data.normalization.n_jets == {"Source": 10}
    # targets: (N, P, 2); a particle is reconstructable only when both daughters are matched
    targets = arrays["TARGETS/h2/b1"][:300]
    np.testing.assert_array_equal(data.train.target_mask[:, 1], targets >= 0)
    batch = data.train_batch(np.arange(5))
    assert batch["targets"].shape == (5, 2, 2) and batch["targets"].dtype == torch.int64
    assert batch["global"]["Kappa"].shape == (5, 1)
    truth = data.val_truth()
    assert (
        truth["n_jets"].shape == (100,)
        and np.isnan(truth["kappa"][truth["classifications"]["EVENT/signal"] == 0]).all()
    )


def test_partial_events_limit_and_randomization(hh_file):
    topology = hh_topology()
    arrays = make_arrays(400, seed=7)
    full = (np.stack([arrays[f"TARGETS/h{h}/b{b}"] for h in (1, 2) for b in (1, 2)], 1) >= 0).all(1)
    data = load_training_data(
        Options(train_validation_split=0.5, partial_events=False), topology, training_file=hh_file
    )
    assert data.n_train == int(full[:200].sum()) and data.n_val == 200  # validation keeps every event
    limited = load_training_data(
        Options(dataset_limit=0.5, train_validation_split=0.8, partial_events=True),
        topology,
        training_file=hh_file,
    )
    assert (limited.n_train, limited.n_val) == (160, 40)
    shuffled = load_training_data(
        Options(dataset_randomization=3, partial_events=True), topology, training_file=hh_file
    )
    again = load_training_data(
        Options(dataset_randomization=3, partial_events=True), topology, training_file=hh_file
    )
    np.testing.assert_array_equal(shuffled.train.targets, again.train.targets)
    assert not np.array_equal(shuffled.train.targets, data.train.targets[: len(shuffled.train)])


def test_limit_to_num_jets_cuts_jets_and_targets(hh_file):
    topology = hh_topology()
    events = read_event_arrays(hh_file, topology, limit_to_num_jets=5)
    assert events.sequential["Source"].shape == (400, 5, 5)
    arrays = make_arrays(400, seed=7)
    beyond = arrays["TARGETS/h1/b1"] >= 5
    assert (events.targets[beyond, 0] == -1).all() and not events.target_mask[beyond, 0].any()
    assert (events.n_jets <= 5).all()


def test_validation_file_of_any_size_and_jet_padding_check(tmp_path, hh_file):
    topology = hh_topology()
    one = write_file(tmp_path / "one.h5", make_arrays(1, seed=2))
    data = load_training_data(
        Options(partial_events=True), topology, training_file=hh_file, validation_file=one
    )
    assert (data.n_train, data.n_val) == (400, 1)
    assert data.val_batch(np.arange(1))["targets"].shape == (1, 2, 2)
    other = write_file(tmp_path / "eight.h5", make_arrays(20, jets=8, seed=2))
    with pytest.raises(DataError, match="pads to 8 jets"):
        load_training_data(
            Options(partial_events=True), topology, training_file=hh_file, validation_file=other
        )
    batches = list(iter_test_batches(hh_file, topology, data.normalization, batch_size=150))
    assert [len(t["n_jets"]) for _, t in batches] == [150, 150, 100]
    with pytest.raises(DataError, match="pads to 8 jets"):
        list(iter_test_batches(other, topology, data.normalization))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.pop("INPUTS/Source/pt"), "INPUTS/Source/pt: missing dataset"),
        (
            lambda a: a.__setitem__("INPUTS/Source/eta", a["INPUTS/Source/eta"][:, :8]),
            "does not match the jet padding",
        ),
        (lambda a: a["TARGETS/h1/b2"].__setitem__(3, 10), "beyond the 10 jet slots"),
        (lambda a: a["INPUTS/Source/MASK"].__setitem__((5, slice(None)), False), "points at padded jet"),
        (lambda a: a["TARGETS/h1/b2"].__setitem__(slice(None), a["TARGETS/h1/b1"]), "both daughters"),
        (lambda a: a["INPUTS/Source/pt"].__setitem__((2, 0), np.nan), "non-finite value at event 2"),
        (
            lambda a: a.__setitem__("TARGETS/h2/b1", a["TARGETS/h2/b1"].astype(np.float32)),
            "integer jet indices",
        ),
    ],
)
def test_bad_files_raise_data_errors_naming_the_dataset(tmp_path, change, match):
    arrays = make_arrays(30, seed=1)
    arrays["CLASSIFICATIONS/EVENT/signal"][:] = 1
    for h in (1, 2):  # every event has all targets, so any broken target is hit
        arrays[f"TARGETS/h{h}/b1"][:] = 2 * h - 2
        arrays[f"TARGETS/h{h}/b2"][:] = 2 * h - 1
    change(arrays)
    path = write_file(tmp_path / "bad.h5", arrays)
    with pytest.raises(DataError) as info:
        read_event_arrays(path, hh_topology())
    assert match in str(info.value) and str(path) in str(info.value)


def test_special_key_spellings_and_missing_classification(tmp_path):
    arrays = make_arrays(20, seed=1)
    arrays["INPUTS/Source/pt"][~arrays["INPUTS/Source/MASK"]] = np.nan  # padding may hold anything
    path = tmp_path / "upstream.h5"
    with h5py.File(path, "w") as h5:
        for name, value in arrays.items():
            if name.startswith("CLASSIFICATIONS"):
                continue
            h5.create_dataset(name.replace("TARGETS/", "SpecialKey.Targets/"), data=value)
    events = read_event_arrays(path, hh_topology())
    assert len(events) == 20 and (events.classifications["EVENT/signal"] == -1).all()
    assert (events.sequential["Source"][~events.sequential_mask["Source"]] == 0).all()
    np.testing.assert_array_equal(
        events.targets[:, 0, 0], np.where(events.target_mask[:, 0], arrays["TARGETS/h1/b1"], -1)
    )


def test_the_network_learns_a_learnable_pairing(tmp_path):
    """Model + loss + decoding + metrics together: the pairing is learnable, the assignment must improve."""
    topology = hh_topology()
    path = write_file(tmp_path / "learn.h5", make_arrays(1200, seed=11))
    opts = Options(
        hidden_dim=16,
        initial_embedding_dim=8,
        num_attention_heads=2,
        num_encoder_layers=1,
        num_branch_embedding_layers=1,
        num_branch_encoder_layers=1,
        train_validation_split=0.75,
        partial_events=True,
        balance_particles=True,
        classification_loss_scale=1.0,
    )
    data = load_training_data(opts, topology, training_file=path)
    torch.manual_seed(0)
    model = SPANet2(opts, topology, data.normalization)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(data.val_batch(np.arange(data.n_val)))
        truth = data.val_truth()
        pred = greedy_decode(out.assignment_log_probs).numpy().reshape(-1, 4)
        table = M.assignment_table(pred, truth["targets"].reshape(-1, 4), truth["n_jets"])
        score = torch.softmax(out.classification_logits["EVENT/signal"], -1)[:, 1].numpy()
        return table.rows["Total"].event_efficiency, M.roc_auc(
            truth["classifications"]["EVENT/signal"], score
        )

    before, _ = evaluate()
    rng = np.random.default_rng(0)
    for _ in range(8):
        model.train()
        order = rng.permutation(data.n_train)
        for start in range(0, data.n_train, 100):
            batch = data.train_batch(order[start : start + 100])
            loss, _ = compute_loss(model(batch), batch, opts, topology)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after, auc = evaluate()
    assert before < 0.2 and after > 0.6 and auc > 0.9


_ = one_torch_thread  # autouse fixture (imported so pytest applies it here)
