"""SPANet HDF5: upstream layouts (plain and SpecialKey.* names) read/validate; chunked reads; malformed files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from spanet2.errors import DataError
from spanet2.events import hdf5 as hdf5_mod
from spanet2.events.hdf5 import (
    HDF5Writer,
    canonical_path,
    iter_chunks,
    n_events,
    read_datasets,
    resolve_dataset,
    validate_file,
    write_datasets,
)
from spanet2.events.topology import load_topology

SPECIAL = {
    "INPUTS": "SpecialKey.Inputs",
    "TARGETS": "SpecialKey.Targets",
    "CLASSIFICATIONS": "SpecialKey.Classifications",
    "EVENT": "SpecialKey.Event",
    "MASK": "SpecialKey.Mask",
}


def test_public_api_pinned():
    assert sorted(hdf5_mod.__all__) == sorted(
        [
            "SPECIAL_KEY_SPELLINGS",
            "EXTRA_GROUPS",
            "canonical_path",
            "open_hdf5",
            "resolve_dataset",
            "list_datasets",
            "read_datasets",
            "iter_chunks",
            "n_events",
            "write_datasets",
            "HDF5Writer",
            "ValidationSummary",
            "validate_file",
            "first_mask_path",
        ]
    )


def test_canonical_path():
    assert canonical_path("SpecialKey.Targets/h1/b1") == "TARGETS/h1/b1"
    assert (
        canonical_path("/SpecialKey.Classifications/SpecialKey.Event/signal")
        == "CLASSIFICATIONS/EVENT/signal"
    )
    assert canonical_path("INPUTS/Source/SpecialKey.Mask") == "INPUTS/Source/MASK"


@pytest.mark.parametrize("rename", [None, SPECIAL], ids=["plain", "specialkey"])
def test_upstream_layout_validates_inspects_converts(
    rename, tmp_path, hh4b_yaml, make_arrays, write_h5, run_cli
):
    arrays = make_arrays(n_events=300)
    path = write_h5(tmp_path / "hh4b.h5", arrays, rename=rename)
    with h5py.File(path) as h5:
        assert ("SpecialKey.Targets" in h5) == (rename is not None)
        assert (
            h5["INPUTS/Source/btag" if rename is None else "SpecialKey.Inputs/Source/btag"].dtype == np.bool_
        )
    topology = load_topology(hh4b_yaml)
    summary = validate_file(topology, path, chunk_size=64)
    assert summary.n_events == 300 and summary.padded_lengths == {"Source": 10}
    labels = arrays["CLASSIFICATIONS/EVENT/signal"]
    assert summary.class_counts["CLASSIFICATIONS/EVENT/signal"] == {
        0: int((labels == 0).sum()),
        1: int((labels == 1).sum()),
    }
    got = read_datasets(path, ["TARGETS/h1/b1", "INPUTS/Source/MASK"], start=10, stop=20)
    np.testing.assert_array_equal(got["TARGETS/h1/b1"], arrays["TARGETS/h1/b1"][10:20])
    assert n_events(path) == n_events(path, topology) == 300

    rc, out, err = run_cli("validate", hh4b_yaml, path)
    assert rc == 0 and err == "" and out.count("\n") == 1 and out.startswith("OK: ")
    rc, out, _ = run_cli("inspect", "--json", path)
    info = json.loads(out)
    assert rc == 0 and info["n_events"] == 300
    n_real = arrays["INPUTS/Source/MASK"].sum(axis=1)
    assert info["jets_per_event"]["histogram"] == {
        str(k): int((n_real == k).sum()) for k in np.unique(n_real)
    }
    full = sum(
        (np.stack([arrays[f"TARGETS/{p}/{d}"] for d in ("b1", "b2")], 1) >= 0).all(1) for p in ("h1", "h2")
    )
    assert info["matched"]["histogram"] == {f"{k}h": int((full == k).sum()) for k in (2, 1, 0)}
    assert info["class_balance"]["CLASSIFICATIONS/EVENT/signal"]["counts"] == {
        "0": int((labels == 0).sum()),
        "1": int((labels == 1).sum()),
    }
    stored = {d["path"]: d["stored_as"] for d in info["datasets"]}
    assert stored["TARGETS/h1/b1"] == ("TARGETS/h1/b1" if rename is None else "SpecialKey.Targets/h1/b1")
    rc, out, _ = run_cli("inspect", path)
    assert rc == 0 and "2h:" in out and "INPUTS/Source/MASK" in out
    rc, out, err = run_cli("convert", path, tmp_path / "store.zarr")
    assert rc == 0, err
    assert "weights from unit" in out


def test_write_and_chunked_reads(tmp_path, make_arrays):
    arrays = make_arrays(n_events=250)
    arrays["WEIGHTS/weight"] = np.full(250, 0.5)
    write_datasets(tmp_path / "w.h5", arrays, attrs={"sqrt_s_tev": 14.0, "meta": {"a": [1, 2]}})
    with h5py.File(tmp_path / "w.h5") as h5:
        assert h5.attrs["sqrt_s_tev"] == 14.0 and json.loads(h5.attrs["meta"]) == {"a": [1, 2]}
        assert resolve_dataset(h5, "SpecialKey.Targets/h2/b2") is not None
        assert resolve_dataset(h5, "TARGETS/h2") is None  # a group, not a dataset
    starts, total = [], 0
    for start, chunk in iter_chunks(tmp_path / "w.h5", ["INPUTS/Source/pt", "WEIGHTS/weight"], chunk_size=64):
        assert len(chunk["INPUTS/Source/pt"]) <= 64
        np.testing.assert_array_equal(
            chunk["INPUTS/Source/pt"], arrays["INPUTS/Source/pt"][start : start + 64]
        )
        starts.append(start)
        total += len(chunk["WEIGHTS/weight"])
    assert starts == [0, 64, 128, 192] and total == 250
    with pytest.raises(DataError, match="TARGETS/h9/b1: missing dataset"):
        read_datasets(tmp_path / "w.h5", ["TARGETS/h9/b1"])


def test_streaming_writer_matches_and_is_atomic(tmp_path, make_arrays, hh4b_yaml):
    arrays = make_arrays(n_events=200)
    with HDF5Writer(tmp_path / "s.h5", attrs={"sqrt_s_tev": 13.6}, chunk_rows=32) as writer:
        for start in range(0, 200, 70):
            writer.append({k: v[start : start + 70] for k, v in arrays.items()})
    got = read_datasets(tmp_path / "s.h5", list(arrays))
    for name, value in arrays.items():
        np.testing.assert_array_equal(got[name], value)
    validate_file(load_topology(hh4b_yaml), tmp_path / "s.h5")
    with pytest.raises(RuntimeError), HDF5Writer(tmp_path / "broken.h5") as writer:
        writer.append({k: v[:10] for k, v in arrays.items()})
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_error_reports_event_across_chunk_boundary(tmp_path, make_arrays, write_h5, hh4b_yaml):
    arrays = make_arrays(n_events=300)
    arrays["INPUTS/Source/pt"][157, 0] = np.inf  # slot 0 is always a real jet
    path = write_h5(tmp_path / "bad.h5", arrays)
    for chunk in (7, 64, 1000):
        with pytest.raises(DataError, match="at event 157, jet 0"):
            validate_file(load_topology(hh4b_yaml), path, chunk_size=chunk)


def test_nan_under_false_mask_is_fine(tmp_path, make_arrays, write_h5, hh4b_yaml):
    arrays = make_arrays(n_events=50)
    arrays["INPUTS/Source/eta"][~arrays["INPUTS/Source/MASK"]] = np.nan
    validate_file(load_topology(hh4b_yaml), write_h5(tmp_path / "ok.h5", arrays))


# ---- malformed HDF5 files: each a (name, edit, key, message fragment) ----------------------
def _drop(name):
    return lambda a: a.pop(name)


def _set(name, fn):
    def edit(a):
        a[name] = fn(a[name], a)

    return edit


def _poke(name, index, value):
    def edit(a):
        a[name] = a[name].copy()
        a[name][index] = value

    return edit


def _first_padding_slot(a):
    mask = a["INPUTS/Source/MASK"]
    event = int(np.argmax(~mask.all(axis=1)))
    return event, int(np.argmax(~mask[event]))


def _target_on_padding(a):
    event, slot = _first_padding_slot(a)
    a["TARGETS/h2/b2"] = a["TARGETS/h2/b2"].copy()
    a["TARGETS/h2/b2"][event] = slot


def _same_jet_twice(a):
    for name in ("TARGETS/h1/b1", "TARGETS/h2/b1"):
        a[name] = a[name].copy()
    a["TARGETS/h1/b1"][42] = 3
    a["TARGETS/h2/b1"][42] = 3
    for name in ("TARGETS/h1/b2", "TARGETS/h2/b2"):
        a[name] = a[name].copy()
        a[name][42] = -1


MALFORMED_H5 = [
    ("missing-mask", _drop("INPUTS/Source/MASK"), "INPUTS/Source/MASK", "missing MASK"),
    ("missing-feature", _drop("INPUTS/Source/pt"), "INPUTS/Source/pt", "missing dataset"),
    ("missing-global", _drop("INPUTS/Kappa/kappa"), "INPUTS/Kappa/kappa", "missing dataset"),
    ("missing-target", _drop("TARGETS/h2/b1"), "TARGETS/h2/b1", "missing dataset"),
    (
        "missing-class",
        _drop("CLASSIFICATIONS/EVENT/signal"),
        "CLASSIFICATIONS/EVENT/signal",
        "missing dataset",
    ),
    (
        "feature-shape",
        _set("INPUTS/Source/eta", lambda v, a: v[:, :9]),
        "INPUTS/Source/eta",
        "shape mismatch",
    ),
    ("feature-events", _set("INPUTS/Source/phi", lambda v, a: v[:-1]), "INPUTS/Source/phi", "shape mismatch"),
    ("mask-rank", _set("INPUTS/Source/MASK", lambda v, a: v[:, 0]), "INPUTS/Source/MASK", "wrong rank"),
    (
        "mask-float",
        _set("INPUTS/Source/MASK", lambda v, a: v.astype(np.float32)),
        "INPUTS/Source/MASK",
        "expected a bool mask",
    ),
    ("target-rank", _set("TARGETS/h1/b1", lambda v, a: np.stack([v, v], 1)), "TARGETS/h1/b1", "wrong rank"),
    ("target-float", _set("TARGETS/h1/b1", lambda v, a: v.astype(np.float32)), "TARGETS/h1/b1", "integer"),
    (
        "global-length",
        _set("INPUTS/Kappa/kappa", lambda v, a: v[:-3]),
        "INPUTS/Kappa/kappa",
        "has 197 events",
    ),
    (
        "global-rank",
        _set("INPUTS/Kappa/kappa", lambda v, a: np.stack([v, v], 1)),
        "INPUTS/Kappa/kappa",
        "wrong rank",
    ),
    (
        "nan-under-mask",
        _poke("INPUTS/Source/mass", (33, 1), np.nan),
        "INPUTS/Source/mass",
        "at event 33, jet 1",
    ),
    ("inf-global", _poke("INPUTS/Kappa/kappa", 12, np.inf), "INPUTS/Kappa/kappa", "at event 12"),
    (
        "target-too-large",
        _poke("TARGETS/h1/b2", 77, 10),
        "TARGETS/h1/b2",
        "padded length 10 of INPUTS/Source at event 77",
    ),
    ("target-below-minus-one", _poke("TARGETS/h1/b2", 8, -2), "TARGETS/h1/b2", "-2 < -1 at event 8"),
    ("target-on-padding", _target_on_padding, "TARGETS/h2/b2", "masked (padding) jet"),
    ("same-jet-twice", _same_jet_twice, "TARGETS/h1/b1", "jet 3 is used twice in event 42"),
    (
        "class-below-minus-one",
        _poke("CLASSIFICATIONS/EVENT/signal", 150, -3),
        "CLASSIFICATIONS/EVENT/signal",
        "-3 < -1 at event 150",
    ),
    (
        "class-float",
        _set("CLASSIFICATIONS/EVENT/signal", lambda v, a: v.astype(np.float64)),
        "CLASSIFICATIONS/EVENT/signal",
        "integer class labels",
    ),
    (
        "weights-length",
        lambda a: a.__setitem__("WEIGHTS/weight", np.ones(150)),
        "WEIGHTS/weight",
        "expected 200 rows",
    ),
    (
        "weights-nan",
        lambda a: a.__setitem__("WEIGHTS/weight", np.r_[np.ones(99), np.nan, np.ones(100)]),
        "WEIGHTS/weight",
        "at event 99",
    ),
    (
        "zero-events",
        lambda a: [a.__setitem__(k, v[:0]) for k, v in list(a.items())],
        "INPUTS/Source/MASK",
        "0 events",
    ),
]


@pytest.mark.parametrize("case,edit,key,fragment", MALFORMED_H5, ids=[c[0] for c in MALFORMED_H5])
def test_malformed_hdf5(case, edit, key, fragment, tmp_path, make_arrays, write_h5, hh4b_yaml, run_cli):
    arrays = make_arrays(n_events=200)
    edit(arrays)
    path = write_h5(tmp_path / f"{case}.h5", arrays)
    with pytest.raises(DataError) as info:
        validate_file(load_topology(hh4b_yaml), path, chunk_size=64)
    assert info.value.key == key and fragment in info.value.message
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, out, err = run_cli("validate", hh4b_yaml, path)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: {key}: " in err and fragment in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "content,fragment",
    [
        (None, "file not found"),
        (b"", "not an HDF5 file"),
        (b"INPUTS,TARGETS\n1,2\n", "not an HDF5 file"),
    ],
    ids=["missing", "zero-bytes", "csv"],
)
def test_not_hdf5(content, fragment, tmp_path, hh4b_yaml, run_cli):
    path = tmp_path / "data.h5"
    if content is not None:
        path.write_bytes(content)
    for args in (("validate", hh4b_yaml, path), ("inspect", path), ("convert", path, tmp_path / "out.zarr")):
        rc, out, err = run_cli(*args)
        assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
        assert f"{path}: {fragment}" in err
        assert not (tmp_path / "out.zarr").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["data.h5"])


def test_empty_hdf5(tmp_path, hh4b_yaml, run_cli):
    path = tmp_path / "empty.h5"
    h5py.File(path, "w").close()
    for args in (("validate", hh4b_yaml, path), ("inspect", path)):
        rc, _, err = run_cli(*args)
        assert rc == 2 and f"{path}: empty file: no datasets" in err and err.count("\n") == 1


TWO_INPUTS = """
INPUTS:
  SEQUENTIAL:
    Jets: {pt: log_normalize, eta: normalize}
    Leptons: {pt: log_normalize}
  GLOBAL:
    Met: {met: log_normalize, phi: normalize}
EVENT:
  t: [b, q]
  lt: [{b: Jets}, {l: Leptons}]
REGRESSIONS:
  EVENT: [neutrino_eta]
CLASSIFICATIONS:
  EVENT: [signal]
"""


def _two_input_arrays(n=120):
    rng = np.random.default_rng(2)
    jets = np.arange(6)[None] < rng.integers(3, 7, n)[:, None]  # (N, 6), >= 3 real jets
    leps = np.zeros((n, 2), bool)
    leps[:, 0] = True
    return {
        "INPUTS/Jets/MASK": jets,
        "INPUTS/Jets/pt": rng.random((n, 6)),
        "INPUTS/Jets/eta": rng.random((n, 6)),
        "INPUTS/Leptons/MASK": leps,
        "INPUTS/Leptons/pt": rng.random((n, 2)),
        "INPUTS/Met/met": rng.random(n),
        "INPUTS/Met/phi": rng.random(n),
        "TARGETS/t/b": np.zeros(n, np.int64),
        "TARGETS/t/q": np.ones(n, np.int64),
        "TARGETS/lt/b": np.full(n, 2),
        "TARGETS/lt/l": np.zeros(n, np.int64),  # l indexes Leptons: no clash
        "REGRESSIONS/EVENT/neutrino_eta": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
        "CLASSIFICATIONS/EVENT/signal": rng.integers(-1, 3, n),
    }


def test_multiple_inputs_and_regressions(tmp_path, write_h5):
    (tmp_path / "two.yaml").write_text(TWO_INPUTS)
    topology = load_topology(tmp_path / "two.yaml")
    arrays = _two_input_arrays()
    summary = validate_file(topology, write_h5(tmp_path / "ok.h5", arrays))
    assert summary.padded_lengths == {"Jets": 6, "Leptons": 2} and summary.n_targets == 4
    assert set(summary.class_counts["CLASSIFICATIONS/EVENT/signal"]) == {-1, 0, 1, 2}
    # the lepton index 1 is padding in every event
    bad = dict(arrays, **{"TARGETS/lt/l": np.ones(120, np.int64)})
    with pytest.raises(DataError, match="TARGETS/lt/l: jet index 1 points at a masked"):
        validate_file(topology, write_h5(tmp_path / "pad.h5", bad))
    # same jet in t and lt (both index Jets)
    bad = dict(arrays, **{"TARGETS/lt/b": np.zeros(120, np.int64)})
    with pytest.raises(DataError, match="TARGETS/t/b: jet 0 is used twice in event 0 .also by TARGETS/lt/b"):
        validate_file(topology, write_h5(tmp_path / "dup.h5", bad))
    bad = dict(arrays, **{"REGRESSIONS/EVENT/neutrino_eta": np.ones(120, np.int64)})
    with pytest.raises(DataError, match="REGRESSIONS/EVENT/neutrino_eta: expected floating"):
        validate_file(topology, write_h5(tmp_path / "reg.h5", bad))
    bad = {k: v for k, v in arrays.items() if k != "REGRESSIONS/EVENT/neutrino_eta"}
    with pytest.raises(DataError, match="REGRESSIONS/EVENT/neutrino_eta: missing dataset"):
        validate_file(topology, write_h5(tmp_path / "noreg.h5", bad))
    bad = dict(
        arrays,
        **{
            "INPUTS/Leptons/MASK": arrays["INPUTS/Leptons/MASK"][:-1],
            "INPUTS/Leptons/pt": arrays["INPUTS/Leptons/pt"][:-1],
        },
    )
    with pytest.raises(DataError, match="INPUTS/Leptons/MASK: has 119 events but INPUTS/Jets/MASK has 120"):
        validate_file(topology, write_h5(tmp_path / "len.h5", bad))
