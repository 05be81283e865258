"""min-ΔR pairing (PHYSICS.md §3) on hand-made events, incl. φ wrap-around, and the `spanet2 pair` command."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from spanet2.physics import pairing
from spanet2.physics.pairing import leading_btagged_jets, min_dr_pairing


def _event(jets, n_slots=6):
    """jets: list of (pt, eta, phi, btag) -> (1, n_slots) arrays (pt, eta, phi, mass, btag, mask)."""
    arr = np.zeros((6, 1, n_slots))
    for j, (pt, eta, phi, tag) in enumerate(jets):
        arr[0, 0, j], arr[1, 0, j], arr[2, 0, j], arr[3, 0, j], arr[4, 0, j], arr[5, 0, j] = (
            pt,
            eta,
            phi,
            10.0,
            tag,
            1,
        )
    return arr[0], arr[1], arr[2], arr[3], arr[4].astype(np.float32), arr[5].astype(bool)


def test_public_api():
    assert set(pairing.__all__) == {"PAIRINGS", "leading_btagged_jets", "min_dr_pairing", "pair_file"}


def test_pairs_closest_leading_candidate_and_orders_by_pt():
    # Jets 0+3 are close (ΔR 0.3) and form the hardest pair; 1+2 the other pair.
    pt, eta, phi, m, btag, mask = _event(
        [(200, 0.0, 0.0, 1), (150, 1.0, 2.5, 1), (120, -1.0, -2.5, 1), (100, 0.3, 0.0, 1)]
    )
    assert min_dr_pairing(pt, eta, phi, m, btag, mask).tolist() == [[0, 3, 1, 2]]


def test_split_is_chosen_by_the_leading_candidate_and_indices_follow_jets():
    # Close pair (ΔR 0.2) of soft jets vs a back-to-back hard pair: the split is chosen by the leading
    # candidate's ΔR, and candidates come out ordered by their vector-sum pT.
    pt, eta, phi, m, btag, mask = _event(
        [(300, 0.0, 0.0, 1), (280, 0.4, 0.3, 1), (60, 1.0, 2.0, 1), (50, 1.2, 2.0, 1)]
    )
    out = min_dr_pairing(pt, eta, phi, m, btag, mask)
    assert out.tolist() == [[0, 1, 2, 3]]
    # Swap the jet order in the arrays: indices follow, ascending inside each candidate.
    perm = [3, 2, 1, 0, 4, 5]
    out2 = min_dr_pairing(pt[:, perm], eta[:, perm], phi[:, perm], m[:, perm], btag[:, perm], mask[:, perm])
    assert out2.tolist() == [[2, 3, 0, 1]]


def test_phi_wrap_around():
    # Jets at φ = +3.1 and −3.1 are 0.083 apart, not 6.2: they must pair.
    pt, eta, phi, m, btag, mask = _event(
        [(200, 0.0, 3.1, 1), (180, 0.0, 0.0, 1), (170, 0.0, -3.1, 1), (160, 0.1, 1.0, 1)]
    )
    assert min_dr_pairing(pt, eta, phi, m, btag, mask).tolist() == [[0, 2, 1, 3]]


def test_uses_only_the_four_leading_btagged_real_jets():
    # The hardest jet is untagged, slot 5 is padding with a fake high pT; a 5th tagged jet is softest.
    pt, eta, phi, m, btag, mask = _event(
        [
            (500, 0.0, 0.0, 0),
            (200, 0.0, 1.0, 1),
            (190, 0.2, 1.1, 1),
            (150, 1.0, -2.0, 1),
            (140, 1.1, -2.2, 1),
            (30, 0.0, 1.0, 1),
        ]
    )
    mask[0, 5] = False
    pt[0, 5] = 900.0
    assert leading_btagged_jets(pt, btag, mask).tolist() == [[1, 2, 3, 4]]
    assert min_dr_pairing(pt, eta, phi, m, btag, mask).tolist() == [[1, 2, 3, 4]]


def test_fewer_than_four_btags_gives_minus_one_and_batches():
    ev_ok = _event([(200, 0.0, 0.0, 1), (150, 1.0, 2.5, 1), (120, -1.0, -2.5, 1), (100, 0.3, 0.0, 1)])
    ev_bad = _event([(200, 0.0, 0.0, 1), (150, 1.0, 2.5, 0), (120, -1.0, -2.5, 1), (100, 0.3, 0.0, 1)])
    batch = [np.concatenate([a, b]) for a, b in zip(ev_ok, ev_bad, strict=True)]
    assert min_dr_pairing(*batch).tolist() == [[0, 3, 1, 2], [-1, -1, -1, -1]]
    empty = min_dr_pairing(*(a[:0] for a in batch))
    assert empty.shape == (0, 4) and empty.dtype == np.int64


def test_matches_a_brute_force_reference_on_random_events():
    rng = np.random.default_rng(0)
    n, j = 300, 7
    pt = rng.uniform(20, 300, (n, j))
    eta = rng.uniform(-2.5, 2.5, (n, j))
    phi = rng.uniform(-np.pi, np.pi, (n, j))
    mass = rng.uniform(5, 20, (n, j))
    btag = rng.random((n, j)) < 0.8
    mask = rng.random((n, j)) < 0.9
    out = min_dr_pairing(pt, eta, phi, mass, btag, mask)
    for i in range(n):
        idx = [k for k in np.argsort(-pt[i]) if btag[i, k] and mask[i, k]][:4]
        if len(idx) < 4:
            assert (out[i] == -1).all()
            continue
        best = None
        for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
            pairs = [(idx[a], idx[b]), (idx[c], idx[d])]
            ppt = [
                np.hypot(*(sum(pt[i, k] * f(phi[i, k]) for k in p) for f in (np.cos, np.sin))) for p in pairs
            ]
            lead, sub = (pairs[0], pairs[1]) if ppt[0] >= ppt[1] else (pairs[1], pairs[0])
            dphi = np.angle(np.exp(1j * (phi[i, lead[0]] - phi[i, lead[1]])))
            dr = np.hypot(eta[i, lead[0]] - eta[i, lead[1]], dphi)
            if best is None or dr < best[0]:
                best = (dr, sorted(lead) + sorted(sub))
        assert out[i].tolist() == best[1]


def _write_input(path, n=5):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as h5:
        h5["INPUTS/Source/pt"] = rng.uniform(30, 200, (n, 6)).astype(np.float32)
        h5["INPUTS/Source/eta"] = rng.uniform(-2, 2, (n, 6)).astype(np.float32)
        h5["INPUTS/Source/phi"] = rng.uniform(-3, 3, (n, 6)).astype(np.float32)
        h5["INPUTS/Source/mass"] = np.full((n, 6), 10, np.float32)
        h5["INPUTS/Source/btag"] = np.ones((n, 6), np.float32)
        h5["INPUTS/Source/MASK"] = np.ones((n, 6), bool)
        h5["INPUTS/Kappa/kappa"] = np.ones(n, np.float32)
        for t in ("h1/b1", "h1/b2", "h2/b1", "h2/b2"):
            h5[f"TARGETS/{t}"] = np.full(n, 7, np.int64)
        h5["WEIGHTS/weight"] = np.full(n, 0.5)
        h5.attrs["sqrt_s_tev"] = 13.0


def test_pair_command_writes_min_dr_targets(tmp_path, run_cli):
    src, dst = tmp_path / "in.h5", tmp_path / "out.h5"
    _write_input(src)
    rc, out, err = run_cli("pair", src, dst)
    assert rc == 0, err
    with h5py.File(src) as a, h5py.File(dst) as b:
        expected = min_dr_pairing(
            *(a[f"INPUTS/Source/{f}"][()] for f in ("pt", "eta", "phi", "mass", "btag", "MASK"))
        )
        got = np.stack([b[f"TARGETS/{t}"][()] for t in ("h1/b1", "h1/b2", "h2/b1", "h2/b2")], axis=1)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(b["WEIGHTS/weight"][()], a["WEIGHTS/weight"][()])
        assert b.attrs["pairing"] == "min_dr" and b.attrs["sqrt_s_tev"] == 13.0


@pytest.mark.parametrize("broken", ["missing", "no_btag"])
def test_pair_command_bad_input_exits_2_one_line(tmp_path, run_cli, broken):
    src, dst = tmp_path / "in.h5", tmp_path / "out.h5"
    if broken == "no_btag":
        _write_input(src)
        with h5py.File(src, "a") as h5:
            del h5["INPUTS/Source/btag"]
    rc, out, err = run_cli("pair", src, dst)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert str(src) in err
    if broken == "no_btag":
        assert "INPUTS/Source/btag" in err
    assert not dst.exists()
