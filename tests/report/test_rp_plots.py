"""Field-style figures: the pairing-efficiency plot has an experiment-style label, binomial error bars from the
2h event counts, human method names, unjoined points at the discrete κλ values, and one curve per pairing."""

from __future__ import annotations

import numpy as np
import pytest

from spanet2.report.plots import binomial_uncertainty, pairing_efficiency_figure, plot_pairing_efficiency
from spanet2.uncertainty import wilson_interval

KAPPAS = (-5.0, 1.0, 5.0)
CURVES = {
    "min_dr_dnn": {-5.0: 0.56, 1.0: 0.80, 5.0: 0.38},
    "spanet2": {-5.0: 0.77, 1.0: 0.85, 5.0: 0.67},
    "spanet2_dnn": {-5.0: 0.77, 1.0: 0.85, 5.0: 0.67},  # the DNN on SPANet2's pairing: the same curve
}
COUNTS = {-5.0: 400, 1.0: 100, 5.0: 25}


def test_binomial_uncertainty_matches_the_formula_and_edges():
    """Half the 68 % Wilson interval: ≈ √(ε(1−ε)/n) in the bulk, > 0 at ε = 0 or 1 (where √(ε(1−ε)/n) is 0,
    which would claim a perfect measurement), 0 without events."""
    eff = np.array([0.5, 0.9, 0.0, 1.0, 0.3])
    n = np.array([100, 400, 50, 50, 0])
    got = binomial_uncertainty(eff, n)
    np.testing.assert_allclose(got[:2], [np.sqrt(0.25 / 100), np.sqrt(0.09 / 400)], rtol=0.01)
    # Wilson at k = 0, z = 1: the interval is [0, 1/(n + 1)], half-width 1/(2(n + 1))
    np.testing.assert_allclose(got[2:4], [1 / (2 * 51), 1 / (2 * 51)], rtol=1e-9)
    assert got[4] == 0.0


def test_pairing_efficiency_figure_in_the_fields_style():
    fig = pairing_efficiency_figure(CURVES, counts=COUNTS, sqrt_s_tev=13.0)
    ax = fig.axes[0]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "SPANet2" in texts and "Simulation" in texts and "13 TeV" in texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["min-ΔR", "mixing-κλ SPANet2"]  # human names; spanet2_dnn shares spanet2's pairing
    assert "kappa" in ax.get_xlabel() and "efficiency" in ax.get_ylabel()
    containers = ax.containers  # one ErrorbarContainer (data line, caps, bars) per curve
    assert len(containers) == 2
    data_lines = [c.lines[0] for c in containers]
    for line in data_lines:
        assert line.get_linestyle() == "None"  # discrete κλ points, not joined
    x_first, x_second = (np.asarray(line.get_xdata()) for line in data_lines)
    assert np.all(np.abs(x_first - np.array(KAPPAS)) < 0.2) and not np.allclose(x_first, x_second)
    bars = containers[1].lines[2][0]
    half_lengths = [abs(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
    values = np.array([CURVES["spanet2"][k] for k in KAPPAS])
    n = np.array([400, 100, 25])
    lo, hi = wilson_interval(np.round(values * n), n)  # the 68 % Wilson interval's half-width
    np.testing.assert_allclose(half_lengths, (hi - lo) / 2, rtol=1e-9)
    np.testing.assert_allclose(half_lengths, np.sqrt(values * (1 - values) / n), rtol=0.03)  # ≈ the normal σ


def test_pairing_efficiency_without_counts_has_no_error_bars_and_writes_png_pdf(tmp_path):
    ax = pairing_efficiency_figure({"custom_method": CURVES["spanet2"]}, sqrt_s_tev=None).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["custom_method"]
    assert not ax.containers[0].has_yerr
    paths = plot_pairing_efficiency(CURVES, tmp_path / "eff", counts=COUNTS)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("bad", [{}, {"m": {}}])
def test_empty_curves_draw_an_empty_figure(bad):
    ax = pairing_efficiency_figure(bad).axes[0]
    assert ax.get_ylim()[1] == pytest.approx(1.15) and ax.get_legend() is None


@pytest.mark.parametrize(
    ("epochs_run", "best", "patience", "cap", "expected"),
    [
        (25, 22, 3, 25, "25 epochs (best 22; early stop, ≤ 25)"),  # patience runs out exactly on the cap
        (25, 24, 3, 25, "25 epochs (best 24; cap reached (patience 3), ≤ 25)"),  # still improving at the cap
        (12, 9, 3, 25, "12 epochs (best 9; early stop, ≤ 25)"),
        (5, 5, 0, 5, "5 epochs (best 5; cap reached (patience 0), ≤ 5)"),  # no early stopping configured
    ],
)
def test_trained_label_says_how_a_run_ended(tmp_path, epochs_run, best, patience, cap, expected):
    import json

    from spanet2.report.study_report import _trained

    losses = [1.0 + abs(e - best) for e in range(1, epochs_run + 1)]  # minimum at `best`
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "val_loss": v}) + "\n" for e, v in enumerate(losses, start=1))
    )
    (tmp_path / "options.json").write_text(json.dumps({"epochs": cap, "patience": patience}))
    assert _trained(tmp_path) == expected
    (tmp_path / "metrics.jsonl").write_text("")
    assert _trained(tmp_path) == "—"


def test_weighted_histogram_matches_a_bin_by_bin_sum():
    from spanet2.report.plots import _weighted_histogram

    rng = np.random.default_rng(3)
    values, weights = rng.uniform(0, 10, 500), rng.exponential(2.0, 500)
    edges = np.array([0.0, 2.5, 5.0, 10.0])
    total, sigma = _weighted_histogram(values, weights, edges)
    for i in range(3):
        inside = (values >= edges[i]) & (values < edges[i + 1]) if i < 2 else (values >= edges[i])
        assert total[i] == pytest.approx(weights[inside].sum())
        assert sigma[i] == pytest.approx(np.sqrt((weights[inside] ** 2).sum()))
    empty_total, empty_sigma = _weighted_histogram(np.zeros(0), np.zeros(0), edges)
    assert (empty_total == 0).all() and (empty_sigma == 0).all()
