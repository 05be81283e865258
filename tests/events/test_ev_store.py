"""Zarr event store: chunked appends round-trip, lazy Dask reads, atomic writes, HDF5 → store conversion."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest

from spanet2.errors import DataError, InputError
from spanet2.events import store as store_mod
from spanet2.events.store import EventStoreWriter, convert_hdf5_to_store, open_store


def test_public_api_pinned():
    assert sorted(store_mod.__all__) == sorted(
        [
            "EventStoreWriter",
            "EventStore",
            "open_store",
            "ConvertSummary",
            "convert_hdf5_to_store",
            "sample_name_for_label",
            "STORE_CHUNK",
            "EVENT_COLUMN_SOURCES",
            "find_event_datasets",
            "event_columns",
        ]
    )


def test_appends_round_trip_in_whole_chunks(tmp_path):
    rng = np.random.default_rng(3)
    sizes = [1, 99, 100, 37, 250, 0, 13]  # irregular appends around the 64-row chunk
    weight = [rng.random(n) for n in sizes]
    pairing = [rng.integers(-1, 10, (n, 4)) for n in sizes]
    with EventStoreWriter(
        tmp_path / "s.zarr", attrs={"sqrt_s_tev": 14.0, "note": "test"}, chunk_size=64
    ) as w:
        for wt, pr in zip(weight, pairing, strict=True):
            w.append(
                "signal",
                {
                    "weight": wt,
                    "kappa_terms": np.stack([wt, 2 * wt, 3 * wt], 1),
                    "spanet/pairing": pr,
                    "spanet/score": wt.astype(np.float32),
                },
            )
        w.append("background", {"weight": np.ones(5)})
        w.set_sample_attrs("signal", {"cross_section_fb": np.float64(0.25)})
        assert not (tmp_path / "s.zarr").exists()  # built under a temporary name
    store = open_store(tmp_path / "s.zarr")
    assert store.samples == ["background", "signal"]
    assert store.attrs["lumi_unit"] == "fb" and store.attrs["sqrt_s_tev"] == 14.0
    assert "commit" in store.attrs["provenance"] and store.attrs["note"] == "test"
    assert store.sample_attrs("signal") == {"cross_section_fb": 0.25}
    assert store.columns("signal") == ["kappa_terms", "weight", "spanet/pairing", "spanet/score"]
    assert store.methods("signal") == ["spanet"] and store.methods("background") == []
    assert store.n_events("signal") == sum(sizes)
    np.testing.assert_array_equal(store.numpy("signal", "weight"), np.concatenate(weight))
    np.testing.assert_array_equal(store.numpy("signal", "spanet/pairing"), np.concatenate(pairing))
    lazy = store.dask("signal", "kappa_terms")
    assert isinstance(lazy, da.Array) and lazy.chunks[0][0] == 64 and lazy.shape == (sum(sizes), 3)
    np.testing.assert_allclose(lazy[:, 2].sum().compute(), 3 * np.concatenate(weight).sum())
    assert store.array("signal", "weight").chunks == (64,)


def test_writer_refuses_inconsistent_columns(tmp_path):
    with (
        pytest.raises(ValueError, match="differ from the first append"),
        EventStoreWriter(tmp_path / "s.zarr", attrs={}) as w,
    ):
        w.append("signal", {"weight": np.ones(3)})
        w.append("signal", {"weight": np.ones(3), "label": np.ones(3)})
    with (
        pytest.raises(ValueError, match="differ in length"),
        EventStoreWriter(tmp_path / "s.zarr", attrs={}) as w,
    ):
        w.append("signal", {"weight": np.ones(3), "label": np.ones(4)})
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_existing_store_needs_overwrite(tmp_path):
    with EventStoreWriter(tmp_path / "s.zarr", attrs={}) as w:
        w.append("signal", {"weight": np.ones(3)})
    with pytest.raises(InputError, match="already exists"):
        EventStoreWriter(tmp_path / "s.zarr", attrs={})
    with EventStoreWriter(tmp_path / "s.zarr", attrs={}, overwrite=True) as w:
        w.append("background", {"weight": np.ones(2)})
    assert open_store(tmp_path / "s.zarr").samples == ["background"]


def test_open_store_errors(tmp_path):
    with pytest.raises(DataError, match="event store not found"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a Zarr event store"):
        open_store(tmp_path / "plain")
    with EventStoreWriter(tmp_path / "s.zarr", attrs={}) as w:
        w.append("signal", {"weight": np.ones(3)})
    store = open_store(tmp_path / "s.zarr")
    with pytest.raises(DataError, match="background: no such sample"):
        store.numpy("background", "weight")
    with pytest.raises(DataError, match="signal/spanet/score: missing column"):
        store.dask("signal", "spanet/score")


def test_convert_with_weights_and_unlabelled(tmp_path, make_arrays, write_h5, run_cli):
    arrays = make_arrays(n_events=500, seed=5)
    labels = arrays["CLASSIFICATIONS/EVENT/signal"].copy()
    labels[::50] = -1
    arrays["CLASSIFICATIONS/EVENT/signal"] = labels
    rng = np.random.default_rng(9)
    arrays["WEIGHTS/weight"] = rng.random(500) * 1e-3
    arrays["WEIGHTS/kappa_terms"] = rng.random((500, 3)) * 1e-3
    path = write_h5(tmp_path / "w.h5", arrays, attrs={"sqrt_s_tev": 14.0})
    summary = convert_hdf5_to_store(path, tmp_path / "s.zarr", read_chunk=64, store_chunk=100)
    assert summary.weight_source == "WEIGHTS/weight" and summary.n_events == 500
    store = open_store(tmp_path / "s.zarr")
    assert store.samples == ["background", "signal", "unlabelled"]
    assert store.attrs["sqrt_s_tev"] == 14.0 and store.attrs["weight_source"] == "WEIGHTS/weight"
    n_real = arrays["INPUTS/Source/MASK"].sum(axis=1)
    for sample, value in (("signal", 1), ("background", 0), ("unlabelled", -1)):
        sel = labels == value
        assert store.n_events(sample) == sel.sum()
        np.testing.assert_array_equal(store.numpy(sample, "label"), np.full(sel.sum(), value, np.int8))
        np.testing.assert_array_equal(store.numpy(sample, "n_jets"), n_real[sel])
        np.testing.assert_array_equal(store.numpy(sample, "weight"), arrays["WEIGHTS/weight"][sel])
        np.testing.assert_array_equal(store.numpy(sample, "kappa_terms"), arrays["WEIGHTS/kappa_terms"][sel])
        np.testing.assert_array_equal(store.numpy(sample, "kappa_input"), arrays["INPUTS/Kappa/kappa"][sel])
        assert (
            store.numpy(sample, "label").dtype == np.int8 and store.numpy(sample, "n_jets").dtype == np.int16
        )
        attrs = store.sample_attrs(sample)
        assert attrs["n_events"] == sel.sum()
        np.testing.assert_allclose(attrs["cross_section_fb"], arrays["WEIGHTS/weight"][sel].sum())
    rc, out, _ = run_cli("inspect", "--json", tmp_path / "s.zarr")
    info = json.loads(out)
    assert rc == 0 and info["format"] == "zarr" and info["n_events"] == 500
    assert info["samples"]["signal"]["labels"] == {"1": int((labels == 1).sum())}
    sel = labels == 0
    assert info["samples"]["background"]["jets_per_event"] == {
        str(k): int((n_real[sel] == k).sum()) for k in np.unique(n_real[sel])
    }
    rc, out, _ = run_cli("inspect", tmp_path / "s.zarr")
    assert rc == 0 and "signal:" in out and "unlabelled:" in out


def test_convert_unit_weights_without_kappa(tmp_path, make_arrays, write_h5):
    arrays = make_arrays(n_events=80)
    del arrays["INPUTS/Kappa/kappa"]
    path = write_h5(tmp_path / "u.h5", arrays)
    summary = convert_hdf5_to_store(path, tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr")
    assert summary.weight_source == store.attrs["weight_source"] == "unit"
    assert store.attrs["kappa_source"] is None
    assert "kappa_input" not in store.columns("signal") and "kappa_terms" not in store.columns("signal")
    assert (store.numpy("signal", "weight") == 1.0).all()
    assert store.sample_attrs("signal")["cross_section_fb"] is None


CONVERT_ERRORS = [
    ("no-mask", lambda a: a.pop("INPUTS/Source/MASK"), "INPUTS/Source/MASK", "missing dataset"),
    # discovered only in the last read chunk: the half-built store must vanish
    (
        "late-bad-label",
        lambda a: a["CLASSIFICATIONS/EVENT/signal"].__setitem__(190, -4),
        "CLASSIFICATIONS/EVENT/signal",
        "-4 < -1 at event 190",
    ),
    (
        "weight-length",
        lambda a: a.__setitem__("WEIGHTS/weight", np.ones(7)),
        "WEIGHTS/weight",
        "has 7 events",
    ),
    (
        "kappa-terms-shape",
        lambda a: a.__setitem__("WEIGHTS/kappa_terms", np.ones((200, 2))),
        "WEIGHTS/kappa_terms",
        "unexpected shape",
    ),
    (
        "float-labels",
        lambda a: a.__setitem__("CLASSIFICATIONS/EVENT/signal", np.ones(200)),
        "CLASSIFICATIONS/EVENT/signal",
        "integer class labels",
    ),
]


@pytest.mark.parametrize("case,edit,key,fragment", CONVERT_ERRORS, ids=[c[0] for c in CONVERT_ERRORS])
def test_convert_errors_leave_nothing(case, edit, key, fragment, tmp_path, make_arrays, write_h5, run_cli):
    arrays = make_arrays(n_events=200)
    edit(arrays)
    path = write_h5(tmp_path / "bad.h5", arrays)
    rc, out, err = run_cli("convert", path, tmp_path / "out.zarr", "--chunk-size", "16")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: {key}: " in err and fragment in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_convert_refuses_existing_output_and_bad_chunk(tmp_path, upstream_file, run_cli):
    (tmp_path / "out.zarr").mkdir()
    rc, _, err = run_cli("convert", upstream_file, tmp_path / "out.zarr")
    assert rc == 2 and "out.zarr: output already exists" in err
    rc, out, err = run_cli("convert", upstream_file, tmp_path / "out.zarr", "--overwrite")
    assert rc == 0 and "wrote" in out
    rc, _, err = run_cli("convert", upstream_file, tmp_path / "x.zarr", "--chunk-size", "0")
    assert rc == 2 and "--chunk-size" in err and not (tmp_path / "x.zarr").exists()
