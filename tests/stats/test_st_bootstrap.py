"""Bootstrap replicas of the templates give ± on every bound, Δκλ and equivalent luminosity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spanet2.stats.config import load_scan_config
from spanet2.stats.scan import REPLICA, format_interval_table, run_lumi, run_scan


def test_replica_scales_each_bin_by_a_gamma_ratio_of_its_mc_counts(st_templates):
    tpl = st_templates["spanet2"]
    assert tpl.signal_count_bins.sum() == tpl.n_signal_mc and tpl.background_count_bins.sum() == tpl.n_background_mc
    reps = [tpl.replica(np.random.default_rng(i), f"r{i}") for i in range(400)]
    ratio = np.array([r.background / tpl.background for r in reps])  # (400, B)
    counts = tpl.background_count_bins
    filled = counts > 0
    assert ratio.mean(axis=0)[filled] == pytest.approx(np.ones(filled.sum()), abs=4 / np.sqrt(counts[filled].min()))
    # relative spread 1/√n per bin (as Poisson(n)/n), never 0, within 20 % for 400 replicas
    assert ratio.std(axis=0)[filled] == pytest.approx(1 / np.sqrt(counts[filled]), rel=0.2)
    sig = np.array([r.signal_terms / np.where(tpl.signal_terms == 0, 1, tpl.signal_terms) for r in reps])
    assert np.allclose(sig[:, 0], sig[:, 1]) or np.allclose(tpl.signal_terms[1], 0)  # one factor for all terms


def test_scan_with_replicas_reports_sigma_and_keeps_the_nominal_result(st_config, tmp_path):
    plain = run_scan(load_scan_config(st_config()), scheduler="synchronous", plots=False)
    boot = run_scan(load_scan_config(st_config(bootstrap=12, output=str(tmp_path / "boot"))),
                    scheduler="synchronous", plots=False)  # fmt: skip
    assert set(boot.templates) == set(plain.templates)  # replicas folded away
    assert not any(REPLICA in m for m in boot.intervals)
    for method in plain.intervals:
        for lumi in plain.intervals[method]:
            for stat, iv in plain.intervals[method][lumi].items():
                assert boot.intervals[method][lumi][stat].to_dict() == iv.to_dict()
                err = boot.uncertainties["intervals"][method][lumi][stat]
                assert err["width_replicas"] >= 10
                for what in ("lower", "upper", "width"):
                    assert err[what] is not None and 0 < err[what] < 20
    record = json.loads((tmp_path / "boot" / "results.json").read_text())
    assert record["uncertainties"]["replicas"] == 12
    assert " ± " in format_interval_table(boot)
    # more luminosity: the same MC statistics give a narrower Δκλ; its σ stays finite and positive
    widths = [boot.uncertainties["intervals"]["spanet2"][lumi]["pl"]["width"] for lumi in (139.0, 300.0)]
    assert all(w > 0 for w in widths)


def test_equivalent_luminosity_gets_a_sigma(st_config, tmp_path):
    config = load_scan_config(st_config(bootstrap=8, luminosities=[300], lumi_scan=[139, 300, 1000],
                                        equivalent_luminosity={"reference": "spanet2"}))  # fmt: skip
    result = run_lumi(config, scheduler="synchronous", plots=False)
    entry = result.uncertainties["equivalent_luminosity"]["min_dr_dnn"][300.0]["pl"]
    value = result.equivalent["min_dr_dnn"][300.0]["pl"]["width"]
    assert value is not None and np.isfinite(value)
    assert entry["width"] is not None and 0 < entry["width"] < 10 * value


@pytest.mark.parametrize("bad", [1, -3, True, 2.5])
def test_bad_bootstrap_value_is_a_config_error(st_config, bad):
    from spanet2.events.errors import ConfigError

    with pytest.raises(ConfigError, match="bootstrap"):
        load_scan_config(st_config(bootstrap=bad))
