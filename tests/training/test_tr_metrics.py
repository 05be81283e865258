"""Assignment table (symmetry-aware), pairing efficiency per κλ, accuracy and AUC (checked against sklearn)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spanet2.training.metrics import (
    accuracy,
    assignment_table,
    format_assignment_table,
    higgs_correct,
    pairing_efficiency_by_kappa,
    roc_auc,
)


def test_auc_equals_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(3)
    labels = rng.random(5000) < 0.3
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    weights = rng.uniform(0.1, 3.0, 5000)
    assert roc_auc(labels, scores, weights) == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights), abs=1e-12
    )
    assert roc_auc(labels, -scores) == pytest.approx(1 - roc_auc(labels, scores), abs=1e-12)
    assert np.isnan(roc_auc(np.ones(3), np.arange(3)))


def test_auc_edge_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_accuracy():
    assert accuracy([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6]) == 0.5
    assert accuracy([1, 0], [0.5, 0.49]) == 1.0  # score == threshold counts as signal
    assert accuracy([1, 0], [0.9, 0.9], weights=[3.0, 1.0]) == 0.75


def test_higgs_correct_is_symmetric():
    target = np.array([[0, 1, 2, 3]])
    for pred in ([0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]):
        assert higgs_correct(np.array([pred]), target).all()
    assert higgs_correct(np.array([[0, 2, 1, 3]]), target).tolist() == [[False, False]]
    assert higgs_correct(np.array([[0, 1, 2, 4]]), target).tolist() == [[True, False]]
    # an unmatched true Higgs is never "found", even by a prediction of -1s
    assert higgs_correct(np.array([[0, 1, -1, -1]]), np.array([[0, 1, -1, -1]])).tolist() == [[True, False]]


def test_assignment_table_by_hand():
    target = np.array(
        [
            [0, 1, 2, 3],  # 4 jets, right (h1<->h2 and b1<->b2 swapped in pred)
            [0, 1, 2, 3],  # 4 jets, one Higgs right
            [0, 4, 2, 3],  # 5 jets, wrong
            [5, 1, 2, 0],  # 6 jets, right
            [0, 1, -1, -1],  # 1h event: not in the table
            [-1, -1, -1, -1],  # background
        ]
    )
    pred = np.array(
        [
            [3, 2, 1, 0],
            [0, 1, 2, 4],
            [0, 2, 4, 3],
            [1, 5, 0, 2],
            [0, 1, 2, 3],
            [0, 1, 2, 3],
        ]
    )
    n_jets = np.array([4, 4, 5, 7, 4, 6])
    table = assignment_table(pred, target, n_jets)
    rows = table.rows
    assert list(rows) == ["=4", "=5", ">=6", "Total"]
    assert rows["=4"].n_events == 2 and rows["=4"].event_fraction == pytest.approx(2 / 6)
    assert rows["=4"].event_efficiency == 0.5 and rows["=4"].higgs_efficiency == 0.75
    assert rows["=5"].event_efficiency == 0.0 and rows["=5"].higgs_efficiency == 0.0
    assert rows[">=6"].event_efficiency == 1.0
    assert rows["Total"].n_events == 4 and rows["Total"].event_fraction == pytest.approx(4 / 6)
    assert rows["Total"].event_efficiency == 0.5 and rows["Total"].higgs_efficiency == pytest.approx(5 / 8)
    with_total = assignment_table(pred, target, n_jets, n_total=12)
    assert with_total.rows["Total"].event_fraction == pytest.approx(4 / 12)
    # σ: Wilson for the fraction and event efficiency; per-event found share (1, ½ here) spread / √n for the Higgs
    from spanet2.uncertainty import binomial_error

    assert rows["=4"].event_fraction_err == pytest.approx(binomial_error(2, 6))
    assert rows["=4"].event_efficiency_err == pytest.approx(binomial_error(1, 2))
    assert rows["=4"].higgs_efficiency_err == pytest.approx(max(np.std([1, 0.5], ddof=1) / np.sqrt(2),
                                                                binomial_error(3, 4)))
    assert rows["=5"].higgs_efficiency_err == pytest.approx(binomial_error(0, 2))  # one event: no spread
    text = format_assignment_table(table)
    expected = (f"| =4 | {2 / 6:.3f} ± {binomial_error(2, 6):.3f} | 0.500 ± {binomial_error(1, 2):.3f} | "
                f"0.750 ± {rows['=4'].higgs_efficiency_err:.3f} |")
    assert expected in text and text.count("\n") == 5
    assert table.as_dict()["Total"]["n_events"] == 4


def test_empty_bin_is_nan_and_bad_shapes_raise():
    table = assignment_table(np.zeros((1, 4), int), np.array([[0, 1, 2, 3]]), np.array([4]))
    assert np.isnan(table.rows["=5"].event_efficiency) and table.rows["=5"].event_fraction == 0.0
    with pytest.raises(ValueError):
        assignment_table(np.zeros((2, 3), int), np.zeros((2, 3), int), np.zeros(2))


def test_pairing_efficiency_by_kappa():
    target = np.tile([0, 1, 2, 3], (6, 1))
    target[5] = [0, 1, -1, -1]  # partial: excluded
    pred = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [1, 0, 3, 2], [1, 0, 3, 2], [0, 1, 2, 3], [0, 1, 2, 3]])
    kappa = np.array([1.0, 1.0, 5.0, 5.0, np.nan, 5.0])
    assert pairing_efficiency_by_kappa(pred, target, kappa) == {1.0: 0.5, 5.0: 1.0}
