"""`spanet2 generate signal|background|sets`: files, weights convention, reproducibility, bad inputs."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest

from spanet2.events.hdf5 import validate_file
from spanet2.events.topology import load_topology
from spanet2.generate.writer import produce_sample

TOPOLOGY = "configs/events/hh4b.yaml"


def _read(path):
    with h5py.File(path) as h5:
        data = {}
        h5.visititems(
            lambda name, obj: data.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        return data, dict(h5.attrs)


def test_sets_writes_the_four_study_files(tmp_path, run_cli, request):
    out = tmp_path / "sets"
    rc, stdout, err = run_cli(
        "generate",
        "sets",
        "--kappa",
        "1,5",
        "--signal-per-kappa",
        60,
        "--background",
        20,
        "--seed",
        3,
        "--output-dir",
        out,
        "--no-progress",
    )
    assert rc == 0, err
    topology = load_topology(request.config.rootpath / TOPOLOGY)
    files = {
        name: _read(out / f"{name}.h5")
        for name in ("assignment_train", "assignment_test", "classification_train", "classification_test")
    }
    for name in files:
        validate_file(topology, out / f"{name}.h5")
    a_train, a_test = files["assignment_train"][0], files["assignment_test"][0]
    c_train, c_test = files["classification_train"][0], files["classification_test"][0]
    assert len(a_train["TRUTH/process"]) == 108 and len(a_test["TRUTH/process"]) == 12  # 10 % per κλ point
    assert (a_train["CLASSIFICATIONS/EVENT/signal"] == 1).all()
    assert sorted(np.unique(a_test["INPUTS/Kappa/kappa"]).tolist()) == [1.0, 5.0]
    assert len(c_train["TRUTH/process"]) == 108 + 18 and len(c_test["TRUTH/process"]) == 12 + 2
    labels = c_train["CLASSIFICATIONS/EVENT/signal"]
    assert set(labels.tolist()) == {0, 1} and not (np.diff(labels) <= 0).all()  # shuffled
    bkg = labels == 0
    assert set(np.unique(c_train["INPUTS/Kappa/kappa"][bkg]).tolist()) <= {1.0, 5.0}
    assert (c_train["TARGETS/h1/b1"][bkg] == -1).all()
    # the same signal events feed assignment and classification files
    assert (
        np.sort(c_test["TRUTH/m_hh"][c_test["TRUTH/process"] == 1]).tolist()
        == np.sort(a_test["TRUTH/m_hh"]).tolist()
    )
    # weights: each file alone represents the full σ × efficiency
    w_sig_train, w_sig_test = a_train["WEIGHTS/weight"].sum(), a_test["WEIGHTS/weight"].sum()
    assert w_sig_train == pytest.approx(w_sig_test, rel=0.5) and 0.1 < w_sig_train < 2.0  # fb, ~0.5 at 13 TeV
    kt = a_train["WEIGHTS/kappa_terms"]
    k = a_train["TRUTH/kappa"]
    np.testing.assert_allclose(
        (kt * np.stack([np.ones_like(k), k, k**2], 1)).sum(1), a_train["WEIGHTS/weight"], rtol=1e-5
    )
    attrs = files["classification_test"][1]
    assert attrs["sqrt_s_tev"] == 13.0 and attrs["lumi_unit"] == "fb" and attrs["seed"] == 3
    assert attrs["background_cross_section_fb"] == pytest.approx(
        c_test["WEIGHTS/weight"][~(c_test["CLASSIFICATIONS/EVENT/signal"] == 1)].sum()
    )
    prov = json.loads(attrs["provenance"])
    assert prov["options"]["seed"] == 3 and "versions" in prov and "commit" in prov
    assert {s["process"] for s in json.loads(attrs["samples"])} == {"signal", "background"}
    assert (out / "sets.json").exists()


def test_same_seed_same_file_other_seed_differs(tmp_path, run_cli):
    paths = [tmp_path / f"{name}.h5" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        rc, _, err = run_cli(
            "generate",
            "background",
            "--events",
            15,
            "--kappa-input",
            "1,2",
            "--seed",
            seed,
            "--output",
            path,
            "--no-progress",
        )
        assert rc == 0, err
    (a, attrs_a), (b, _), (c, _) = (_read(p) for p in paths)
    assert len(a["TRUTH/process"]) == 15 and (a["TRUTH/process"] == 0).all()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["INPUTS/Source/pt"], c["INPUTS/Source/pt"])
    assert attrs_a["cross_section_fb"] == pytest.approx(a["WEIGHTS/weight"].sum())


def test_worker_count_does_not_change_the_sample():
    kwargs = dict(sqrt_s_tev=13.0, seed=9, kappa=1.0, chunk_size=600)
    one = produce_sample("signal", 70, workers=1, **kwargs)
    two = produce_sample("signal", 70, workers=2, **kwargs)
    assert one.n_chunks >= 2  # several chunks, combined in order
    assert one.n_generated == two.n_generated
    for key in one.events:
        np.testing.assert_array_equal(one.events[key], two.events[key])
    # Σ weight = σ × BR × (selected / generated)
    assert one.sigma_fb == pytest.approx(one.events["WEIGHTS/weight"].sum())
    assert one.n_events == 70


def test_signal_command_mixes_kappa_points(tmp_path, run_cli):
    path = tmp_path / "sig.h5"
    rc, stdout, err = run_cli(
        "generate",
        "signal",
        "--kappa",
        "2,12",
        "--events-per-kappa",
        40,
        "--seed",
        1,
        "--output",
        path,
        "--no-progress",
    )
    assert rc == 0, err
    data, attrs = _read(path)
    assert np.bincount((data["INPUTS/Kappa/kappa"] == 12).astype(int)).tolist() == [40, 40]
    assert "fb" in stdout and attrs["signal_cross_section_fb"] > 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "ttbar", "--events", "3"], "invalid choice"),
        (["generate", "signal", "--kappa", "", "--events-per-kappa", "3", "--output", "{tmp}/x.h5"], "empty"),
        (
            ["generate", "signal", "--kappa", "1,two", "--events-per-kappa", "3", "--output", "{tmp}/x.h5"],
            "two",
        ),
        (
            ["generate", "signal", "--kappa", "1,nan", "--events-per-kappa", "3", "--output", "{tmp}/x.h5"],
            "nan",
        ),
        (["generate", "signal", "--events-per-kappa", "-3", "--output", "{tmp}/x.h5"], "--events-per-kappa"),
        (["generate", "background", "--events", "-5", "--output", "{tmp}/x.h5"], "--events"),
        (["generate", "background", "--events", "many", "--output", "{tmp}/x.h5"], "--events"),
        (
            ["generate", "sets", "--signal-per-kappa", "0", "--background", "1", "--output-dir", "{tmp}/d"],
            "--signal-per-kappa",
        ),
        (
            ["generate", "sets", "--signal-per-kappa", "5", "--background", "-1", "--output-dir", "{tmp}/d"],
            "--background",
        ),
        (
            ["generate", "background", "--events", "5", "--sqrt-s", "-13", "--output", "{tmp}/x.h5"],
            "--sqrt-s",
        ),
        (
            ["generate", "background", "--events", "5", "--workers", "0", "--output", "{tmp}/x.h5"],
            "--workers",
        ),
        (["generate", "background", "--events", "5", "--output", "{tmp}/blocker/x.h5"], "blocker"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, run_cli, args, needle):
    (tmp_path / "blocker").write_text("a file, not a folder")
    rc, stdout, err = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "d").exists()


def test_pythia_shower_without_the_extra_is_a_clear_error(tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "spanet2.generate.pythia_backend", None)  # as if [pythia] is missing
    rc, _, err = run_cli(
        "generate",
        "signal",
        "--kappa",
        "1",
        "--events-per-kappa",
        3,
        "--shower",
        "pythia",
        "--output",
        tmp_path / "p.h5",
    )
    assert rc == 2 and "[pythia]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.h5").exists()


def test_interrupted_run_resumes_from_finished_samples(tmp_path, monkeypatch):
    from spanet2.generate import writer

    fresh, resumed = tmp_path / "fresh.h5", tmp_path / "resumed.h5"
    opts = dict(kappas="1,5", events_per_kappa=30, sqrt_s_tev=13.0, seed=4, show_progress=False)
    writer.generate_signal_file(fresh, **opts)
    real = writer.produce_sample
    calls = []

    def failing(process, n, **kw):
        calls.append(kw["kappa"])
        if kw["kappa"] == 5.0:
            raise KeyboardInterrupt  # the user stops the run during the second κλ point
        return real(process, n, **kw)

    monkeypatch.setattr(writer, "produce_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        writer.generate_signal_file(resumed, **opts)
    assert not resumed.exists()
    partial = tmp_path / ".resumed.h5.partial"
    assert len(list(partial.glob("signal_*.h5"))) == 1  # κλ = 1 finished and kept
    calls.clear()
    monkeypatch.setattr(
        writer, "produce_sample", lambda process, n, **kw: calls.append(kw["kappa"]) or real(process, n, **kw)
    )
    writer.generate_signal_file(resumed, **opts)
    assert calls == [5.0]  # only the missing point was generated again
    assert not partial.exists()
    a, _ = _read(fresh)
    b, _ = _read(resumed)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
