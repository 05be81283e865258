"""Truth matching, the four-tag cut and the HDF5 contract dict of `finalize_events` on hand-made events."""

from __future__ import annotations

import numpy as np

from spanet2.events.jets import JetEvents
from spanet2.generate import selection
from spanet2.generate.partons import PartonEvents
from spanet2.generate.selection import finalize_events, four_tag_mask, match_jets_to_quarks
from spanet2.physics.kinematics import ptetaphim_to_p4


def test_public_api():
    assert {"match_jets_to_quarks", "finalize_events", "four_tag_mask"} <= set(selection.__all__)


def test_matching_is_greedy_by_dr_one_jet_per_quark():
    # Quark 0 is 0.10 from jet 0 and 0.05 from jet 1; quark 1 is 0.08 from jet 1 and 0.30 from jet 0.
    # Global-closest first: (jet1, q0) at 0.05, then q1 takes jet 0 at 0.30.
    jet_eta = np.array([[0.0, 0.15, 2.0]])
    jet_phi = np.zeros((1, 3))
    mask = np.array([[True, True, True]])
    q_eta = np.array([[0.10, 0.23, -2.0]])
    q_phi = np.zeros((1, 3))
    out = match_jets_to_quarks(jet_eta, jet_phi, mask, q_eta, q_phi)
    assert out.tolist() == [[1, 0, -1]]  # the third quark has no jet within 0.4


def test_matching_respects_mask_radius_phi_wrap_and_nan():
    jet_eta = np.array([[0.0, 0.0, 1.0, 1.0]])
    jet_phi = np.array([[3.1, 0.0, 0.0, 1.0]])
    mask = np.array([[True, False, True, True]])
    q_eta = np.array([[0.0, 0.0, 1.0, np.nan]])
    q_phi = np.array([[-3.1, 0.0, 0.399, 1.0]])
    out = match_jets_to_quarks(jet_eta, jet_phi, mask, q_eta, q_phi)
    # wrap: ΔR(3.1, −3.1) = 0.083 -> jet 0; quark 1's only close jet is masked; quark 2 at 0.399 -> jet 2
    assert out.tolist() == [[0, -1, 2, -1]]
    out = match_jets_to_quarks(jet_eta, jet_phi, mask, q_eta, q_phi, max_dr=0.3)
    assert out.tolist() == [[0, -1, -1, -1]]


def test_matching_vectorised_agrees_with_per_event_loop():
    rng = np.random.default_rng(4)
    n, j, q = 200, 8, 4
    jet_eta, jet_phi = rng.uniform(-1, 1, (n, j)), rng.uniform(-1, 1, (n, j))
    mask = rng.random((n, j)) < 0.8
    q_eta, q_phi = rng.uniform(-1, 1, (n, q)), rng.uniform(-1, 1, (n, q))
    out = match_jets_to_quarks(jet_eta, jet_phi, mask, q_eta, q_phi)
    for i in range(n):
        pairs = sorted(
            (np.hypot(jet_eta[i, a] - q_eta[i, b], jet_phi[i, a] - q_phi[i, b]), a, b)
            for a in range(j)
            for b in range(q)
            if mask[i, a]
        )
        expect, used_j, used_q = [-1] * q, set(), set()
        for dr, a, b in pairs:
            if dr < 0.4 and a not in used_j and b not in used_q:
                expect[b] = a
                used_j.add(a)
                used_q.add(b)
        assert out[i].tolist() == expect


def _jets(pt, eta, phi, btag, mask=None):
    pt = np.asarray(pt, float)
    n = len(pt)
    return JetEvents(
        pt=pt,
        eta=np.asarray(eta, float),
        phi=np.asarray(phi, float),
        mass=pt * 0.1,
        btag=np.asarray(btag, bool),
        mask=pt > 0 if mask is None else np.asarray(mask, bool),
        flavour=np.full(pt.shape, 5, np.int8),
        met=np.full(n, 12.0),
        met_phi=np.zeros(n),
        n_electrons=np.zeros(n, np.int16),
        n_muons=np.ones(n, np.int16),
    )


def test_four_tag_cut_edges():
    jets = _jets(
        pt=[[50, 50, 50, 50], [50, 50, 50, 40], [50, 50, 50, 50], [50, 50, 50, 50], [50, 50, 50, 50]],
        eta=[[0, 0, 0, 2.49], [0, 0, 0, 0], [0, 0, 0, 2.5], [0, 0, 0, 0], [0, 0, 0, 0]],
        phi=np.zeros((5, 4)),
        btag=[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]],
        mask=[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]],
    )
    assert four_tag_mask(jets).tolist() == [True, False, False, False, False]


def _partons(b_pt, b_eta, b_phi, process):
    n = len(b_pt)
    b = ptetaphim_to_p4(
        np.asarray(b_pt, float), np.asarray(b_eta, float), np.asarray(b_phi, float), np.full((n, 4), 4.7)
    )
    higgs = np.stack([b[:, 0] + b[:, 1], b[:, 2] + b[:, 3]], axis=1)
    sig = np.asarray(process) == 1
    return PartonEvents(
        b=b,
        weight=np.arange(1.0, n + 1),
        kappa_terms=np.ones((n, 3)),
        kappa=np.where(sig, 5.0, np.nan),
        process=np.asarray(process, np.int8),
        x1=np.full(n, 0.1),
        x2=np.full(n, 0.1),
        scale=np.full(n, 200.0),
        incoming=np.full((n, 2), 21),
        extra=None,
        extra_pdg=None,
        higgs=higgs,
        sqrt_s_tev=13.0,
    )


def test_finalize_events_contract_ordering_targets_and_truth():
    # Event 0 (signal): jets stored out of pT order plus a soft untagged extra jet; all four quarks matched.
    # Event 1 (signal): h2's bbar quark has no jet -> 1h. Event 2: background. Event 3: fails the cut.
    q_pt = [[100, 90, 80, 70]] * 4
    q_eta = [[0.0, 1.0, -1.0, 2.0]] * 4
    q_phi = [[0.0, 1.5, 3.0, -1.5]] * 4
    partons = _partons(q_pt, q_eta, q_phi, [1, 1, 0, 1])
    # jets: indices before ordering; pT order will be jet pT descending.
    jet_pt = [
        [60, 95, 85, 25, 75, 0],
        [60, 95, 85, 25, 75, 0],
        [60, 95, 85, 25, 75, 0],
        [60, 95, 85, 25, 35, 0],
    ]
    jet_eta = [[2.0, 0.0, 1.0, 0.0, -1.0, 0]] * 3 + [[2.0, 0.0, 1.0, 0.0, -1.0, 0]]
    jet_phi = [[-1.5, 0.0, 1.5, 1.0, 3.0, 0]] * 4
    jet_phi = np.array(jet_phi)
    jet_phi[1, 0] = 1.0  # move event 1's h2-bbar jet away from its quark (ΔR ~ 2.5)
    btag = [[1, 1, 1, 0, 1, 0]] * 4
    jets = _jets(jet_pt, jet_eta, jet_phi, btag)
    out = finalize_events(jets, partons, kappa_input=np.array([5.0, 5.0, 3.0, 5.0]), max_jets=4)

    assert len(out["TRUTH/process"]) == 3  # event 3 fails (a tagged jet with pT 35)
    assert out["INPUTS/Source/MASK"].shape == (3, 4) and out["INPUTS/Source/MASK"].dtype == bool
    for f in ("pt", "eta", "phi", "mass", "btag"):
        assert out[f"INPUTS/Source/{f}"].dtype == np.float32
    # pT-ordered, cut to 4 jets: 95 (q0), 85 (q1), 75 (q2), 60 (q3); the 25 GeV jet dropped.
    np.testing.assert_allclose(out["INPUTS/Source/pt"][0], [95, 85, 75, 60])
    assert out["INPUTS/Source/btag"][0].tolist() == [1, 1, 1, 1]
    targets = np.stack([out[f"TARGETS/h{h}/b{k}"] for h in (1, 2) for k in (1, 2)], axis=1)
    assert targets.dtype == np.int64
    assert targets[0].tolist() == [0, 1, 2, 3]
    assert targets[1].tolist() == [0, 1, 2, -1]  # h2 bbar unmatched
    assert targets[2].tolist() == [-1, -1, -1, -1]  # background
    assert out["TRUTH/n_higgs_matched"].tolist() == [2, 1, 0]
    assert out["CLASSIFICATIONS/EVENT/signal"].tolist() == [1, 1, 0]
    assert out["INPUTS/Kappa/kappa"].tolist() == [5.0, 5.0, 3.0]
    assert np.isnan(out["TRUTH/kappa"][2]) and out["TRUTH/kappa"][0] == 5.0
    assert out["WEIGHTS/weight"].tolist() == [1.0, 2.0, 3.0]
    assert out["TRUTH/n_jets"].tolist() == [4, 4, 4]
    np.testing.assert_allclose(out["TRUTH/b_pt"][0], [100, 90, 80, 70], rtol=1e-5)
    assert out["GLOBAL_EXTRA/n_muons"].dtype == np.int16 and out["GLOBAL_EXTRA/met"][0] == 12.0
    assert out["TRUTH/m_hh"][0] > 0 and np.isfinite(out["TRUTH/higgs_pt"][0]).all()


def test_targets_are_ascending_inside_each_higgs():
    # Quarks listed so that b bar's jet has the lower index: stored ascending.
    partons = _partons([[100, 90, 80, 70]], [[0.0, 1.0, -1.0, 2.0]], [[0.0, 1.5, 3.0, -1.5]], [1])
    jets = _jets([[70, 80, 90, 100]], [[2.0, -1.0, 1.0, 0.0]], [[-1.5, 3.0, 1.5, 0.0]], [[1, 1, 1, 1]])
    out = finalize_events(jets, partons, kappa_input=np.array([1.0]))
    # After pT ordering jets are [q0, q1, q2, q3] -> targets [0,1,2,3]; reverse the quark order instead:
    partons_rev = _partons([[90, 100, 70, 80]], [[1.0, 0.0, 2.0, -1.0]], [[1.5, 0.0, -1.5, 3.0]], [1])
    out_rev = finalize_events(jets, partons_rev, kappa_input=np.array([1.0]))
    for o in (out, out_rev):
        assert o["TARGETS/h1/b1"][0] < o["TARGETS/h1/b2"][0]
        assert o["TARGETS/h2/b1"][0] < o["TARGETS/h2/b2"][0]
    assert out_rev["INPUTS/Source/MASK"].shape == (1, 10)
