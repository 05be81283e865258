"""Every shipped scan config validates; the 13 TeV and luminosity configs run on the test store; API pinned."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from spanet2.errors import ConfigError
from spanet2.stats.config import load_scan_config
from spanet2.stats.scan import run_lumi, run_scan

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "scan").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    config = load_scan_config(path)
    assert config.store.endswith("events.zarr") and Path(config.store).is_absolute()
    assert set(config.luminosities) <= {139.0, 300.0, 3000.0}
    assert config.kappa_grid[0] <= -10 and config.kappa_grid[-1] >= 15


def test_shipped_13tev_and_lumi_configs_run_on_the_test_store(st_store, tmp_path):
    root = Path(__file__).resolve().parents[2] / "configs" / "scan"
    scan = run_scan(
        load_scan_config(root / "hh4b_13tev.yaml", store=str(st_store)),
        output=tmp_path / "scan",
        scheduler="synchronous",
        plots=False,
    )
    assert set(scan.intervals) == {"min_dr_dnn", "spanet2_dnn", "spanet2"}
    assert all(iv.closed for per in scan.intervals.values() for by in per.values() for iv in by.values())
    lumi = run_lumi(
        load_scan_config(root / "hh4b_lumi_14tev.yaml", store=str(st_store)),
        output=tmp_path / "lumi",
        scheduler="synchronous",
        plots=False,
    )
    assert len(lumi.intervals["spanet2"]) == 11  # 10 scan points + the equivalent-luminosity point 300
    assert lumi.equivalent["min_dr_dnn"][300.0]["pl"]["width"] > 300


@pytest.mark.parametrize(
    "text, key",
    [
        (
            "store: x.zarr\nmethods: [a]\nkappa_grid: [1, 2, 3]\nluminosities: [139]\nbinning: {bins: 0}\n",
            "binning.bins",
        ),
        ("store: x.zarr\nmethods: [a, a]\nkappa_grid: [1, 2, 3]\nluminosities: [139]\n", "methods"),
        (
            "store: x.zarr\nmethods: [a]\nkappa_grid: {start: 3, stop: 1, step: 1}\nluminosities: [139]\n",
            "kappa_grid.stop",
        ),
        (
            "store: x.zarr\nmethods: [{name: a, threshold: high}]\nkappa_grid: [1, 2, 3]\nluminosities: [139]\n",
            "methods[0].threshold",
        ),
        (
            "store: x.zarr\nmethods: [a]\nkappa_grid: [1, 2, 3]\nluminosities: [139]\nsqrt_s_tev: 8\n",
            "sqrt_s_tev",
        ),
        (
            "store: x.zarr\nmethods: [a]\nkappa_grid: [1, 2, 3]\nluminosities: [139]\n"
            "equivalent_luminosity: {reference: b}\n",
            "equivalent_luminosity.reference",
        ),
        ("- just a list\n", None),
        ("store: [unclosed\n", None),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scan_config(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert "\n" not in info.value.one_line()


PUBLIC = {
    "selection": ["ThresholdChoice", "best_threshold", "best_threshold_from_histograms", "select_threshold"],
    "signal_model": [
        "REFERENCE_CURVES",
        "SM_SIGMA_RATIO_14_OVER_13",
        "curve_coefficients",
        "known_curves",
        "lagrange_weights",
        "morph_terms",
        "morphing_matrix",
        "sigma_of_kappa",
        "signal_yields",
        "term_scale_factors",
    ],
    "likelihood": ["ASIMOV_CONVENTIONS", "KappaLikelihood", "LikelihoodSettings"],
    "intervals": [
        "Interval",
        "allowed_region",
        "cls_interval",
        "delta_twice_nll",
        "profile_likelihood_interval",
        "study_cls_interval",
    ],
    "luminosity": [
        "EQUIVALENT_QUANTITIES",
        "IntervalSettings",
        "equivalent_entry",
        "equivalent_luminosities",
        "equivalent_luminosity",
        "intervals_at",
        "solve_equivalent",
        "solve_equivalent_luminosity",
        "target_reason",
    ],
    "parallel": [
        "HistogramRequest",
        "PointLog",
        "TaskRunner",
        "combine_chunk_histograms",
        "dask_client",
        "histogram_store_chunk",
        "point_key",
        "read_histograms",
        "read_method_histograms",
    ],
    "security": ["CREDENTIAL_FILES", "load_security", "temporary_security", "write_credentials"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_api_is_pinned(module):
    mod = importlib.import_module(f"spanet2.stats.{module}")
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert hasattr(mod, name)
