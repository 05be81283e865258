"""Every figure of report/plots.py is produced from a small store, as PNG and PDF, and is not empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from spanet2.errors import InputError
from spanet2.report import plots
from spanet2.report.store_builder import StoreInput, build_store


def _assert_drawn(paths, min_coloured=0.005):
    """PNG has coloured pixels (data drawn, not just axes) and real variance; the PDF is a non-trivial file."""
    pngs = [p for p in paths if p.suffix == ".png"]
    pdfs = [p for p in paths if p.suffix == ".pdf"]
    assert pngs and len(pngs) == len(pdfs)
    for png in pngs:
        image = imread(png)[..., :3]  # (H, W, 3) floats in [0, 1]
        assert image.var() > 1e-3, png
        saturation = image.max(axis=2) - image.min(axis=2)
        assert np.mean(saturation > 0.2) > min_coloured, f"{png}: no coloured (data) pixels"
    for pdf in pdfs:
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5000


@pytest.fixture(scope="module")
def small_store(toy_files, tmp_path_factory, write_predictions):
    files, mixed = toy_files
    base = tmp_path_factory.mktemp("bl_plots")
    pred = write_predictions(base / "pred.h5", mixed, 11)
    scores = write_predictions(base / "scores.h5", mixed, 12, copy_inputs=False)
    path = base / "events.zarr"
    build_store(path, [StoreInput(str(files["mixed"]))], [f"spanet2={pred}", f"min_dr_dnn=min-dr:{scores}"],
                progress=False)  # fmt: skip
    return path


def test_bl_plot_mass_planes(small_store, tmp_path):
    for sample in ("signal", "background"):
        paths = plots.plot_mass_planes(small_store, sample, tmp_path / f"planes_{sample}")
        assert {p.suffix for p in paths} == {".png", ".pdf"}
        _assert_drawn(paths)
    with pytest.raises(InputError, match="no such method"):
        plots.plot_mass_planes(small_store, "signal", tmp_path / "x", methods=["nope"])


def test_bl_plot_mhh_after_selection(small_store, tmp_path):
    paths, used = plots.plot_mhh_after_selection(small_store, tmp_path / "mhh", lumi_ifb=300.0)
    _assert_drawn(paths)
    assert set(used) == {"spanet2", "min_dr_dnn"} and all(0 <= t <= 1 for t in used.values())
    _, fixed = plots.plot_mhh_after_selection(small_store, tmp_path / "mhh_fixed", thresholds={"spanet2": 0.9},
                                              methods=["spanet2"])  # fmt: skip
    assert fixed == {"spanet2": 0.9}


def test_bl_plot_pairing_efficiency_vs_kappa(small_store, tmp_path):
    curves = {m: plots.pairing_efficiency_from_store(small_store, m) for m in ("spanet2", "min_dr_dnn")}
    # the toy "SPANet2" predictions are the truth pairing: efficiency 1 at every κλ; min-dR is below it
    assert len(curves["spanet2"]) == 10 and all(v == pytest.approx(1.0) for v in curves["spanet2"].values())
    assert np.mean(list(curves["min_dr_dnn"].values())) < 0.95
    # markers with error bars at the discrete κλ values (no joining lines): fewer coloured pixels than a histogram
    _assert_drawn(plots.plot_pairing_efficiency(curves, tmp_path / "eff"), min_coloured=0.001)


def test_bl_store_plot_command(small_store, tmp_path, run_cli):
    rc, out, err = run_cli("store", "plot", small_store, "-o", tmp_path / "figs", "--threshold", "spanet2=0.8",
                           "--method", "spanet2")  # fmt: skip
    assert rc == 0, err
    paths = [Path(p) for p in out.split()]
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}.{ext}"
        for ext in ("png", "pdf")
        for stem in (
            "mass_plane_signal",
            "mass_plane_background",
            "mhh_selected",
            "pairing_efficiency_vs_kappa",
        )
    )
    _assert_drawn([p for p in paths if "pairing" not in p.name])
    _assert_drawn([p for p in paths if "pairing" in p.name], min_coloured=0.001)  # markers, no lines
    rc, _, err = run_cli("store", "plot", small_store, "-o", tmp_path / "figs", "--threshold", "spanet2=high")
    assert rc == 2 and "--threshold" in err
    rc, _, err = run_cli("store", "plot", tmp_path / "nope.zarr", "-o", tmp_path / "figs")
    assert rc == 2 and "nope.zarr" in err
