"""Uncertainty helpers against independent computations (scipy's Wilson interval, bootstrap replicas)."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from spanet2.training.metrics import roc_auc
from spanet2.uncertainty import (
    binomial_error,
    compare,
    delong,
    delong_paired,
    fmt_pm,
    mean_std_sem,
    paired_difference,
    wilson_interval,
)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (700, 1000), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=math.erf(1 / math.sqrt(2)), method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)
    assert binomial_error(k, n) > 0


def test_binomial_error_shrinks_and_rejects_bad_counts():
    assert binomial_error(70, 100) > binomial_error(700, 1000) > binomial_error(7000, 10000)
    assert binomial_error(700, 1000) == pytest.approx(math.sqrt(0.7 * 0.3 / 1000), rel=0.01)
    assert math.isnan(binomial_error(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _sample(rng, n, shift=1.0):
    labels = rng.random(n) < 0.4
    scores = rng.normal(size=n) + shift * labels
    return labels, scores


def test_delong_auc_equals_rank_auc_and_sigma_matches_bootstrap():
    rng = np.random.default_rng(3)
    labels, scores = _sample(rng, 3000)
    scores = np.round(scores, 1)  # ties
    auc, sigma = delong(labels, scores)
    assert auc == pytest.approx(roc_auc(labels, scores), abs=1e-12)
    boot = []
    for _ in range(400):
        idx = rng.integers(0, len(labels), len(labels))
        boot.append(roc_auc(labels[idx], scores[idx]))
    assert sigma == pytest.approx(np.std(boot), rel=0.15)
    assert 0 < sigma < 0.02


def test_delong_one_class_is_nan():
    auc, sigma = delong(np.ones(10, bool), np.arange(10.0))
    assert math.isnan(auc) and math.isnan(sigma)


def test_delong_paired_difference_matches_bootstrap_and_is_smaller_than_unpaired():
    rng = np.random.default_rng(5)
    labels, base = _sample(rng, 4000)
    a = base + 0.3 * rng.normal(size=len(base))
    b = base + 0.5 * rng.normal(size=len(base))
    res = delong_paired(labels, a, b)
    assert res["difference"] == pytest.approx(roc_auc(labels, a) - roc_auc(labels, b), abs=1e-12)
    boot = []
    for _ in range(300):
        idx = rng.integers(0, len(labels), len(labels))
        boot.append(roc_auc(labels[idx], a[idx]) - roc_auc(labels[idx], b[idx]))
    assert res["sigma"] == pytest.approx(np.std(boot), rel=0.2)
    unpaired = math.hypot(delong(labels, a)[1], delong(labels, b)[1])
    assert res["sigma"] < unpaired  # the correlation is used
    same = delong_paired(labels, a, a)
    assert same["difference"] == 0.0 and same["sigma"] == pytest.approx(0.0, abs=1e-12)


def test_paired_difference():
    a = np.array([1, 1, 0, 1, 0, 1, 1, 1], bool)
    b = np.array([1, 0, 0, 1, 0, 0, 1, 1], bool)
    d, s = paired_difference(a, b)
    diffs = a.astype(float) - b
    assert d == pytest.approx(diffs.mean())
    assert s == pytest.approx(diffs.std(ddof=1) / math.sqrt(len(diffs)))
    d0, s0 = paired_difference(a, a)
    assert d0 == 0.0 and s0 > 0  # identical outcomes still carry a finite-sample σ
    with pytest.raises(ValueError):
        paired_difference(a, b[:-1])


def test_mean_std_sem_and_edge_cases():
    r = mean_std_sem([0.70, 0.72, 0.74, None, float("nan")])
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.72)
    assert r["std"] == pytest.approx(0.02) and r["sem"] == pytest.approx(0.02 / math.sqrt(3))
    assert math.isnan(mean_std_sem([0.5])["std"]) and mean_std_sem([])["n"] == 0
    neg = mean_std_sem([-1.0, -3.0])
    assert neg["mean"] == -2.0 and neg["std"] == pytest.approx(math.sqrt(2))


def test_compare_and_format():
    assert compare(0.05, 0.02)["resolved"] and compare(0.05, 0.02)["statement"].startswith("better")
    assert compare(-0.05, 0.02)["statement"].startswith("worse")
    low = compare(0.01, 0.02)
    assert not low["resolved"] and "not resolved at this sample size" in low["statement"]
    assert compare(-1.0, 0.3, higher_is_better=False)["statement"].startswith("better")
    assert compare(float("nan"), 0.1)["statement"] == "not computable"
    assert fmt_pm(0.71934, 0.0153) == "0.719 ± 0.015"
    assert fmt_pm(405.2, 31.0) == "405 ± 31"
    assert fmt_pm(-3.456, 0.21) == "-3.46 ± 0.21"
    assert fmt_pm(None, 0.1) == "—"
