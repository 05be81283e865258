"""Delphes ROOT → HDF5: a file in the Delphes branch schema (written here with uproot) round-trips."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from spanet2.errors import DataError, InputError
from spanet2.generate.delphes import (
    REQUIRED_BRANCHES,
    convert_delphes,
    count_events,
    higgs_b_quarks,
    iter_delphes,
    resolve_branches,
)
from spanet2.generate.detector import fast_detector
from spanet2.generate.partons import PartonEvents
from spanet2.generate.selection import finalize_events
from spanet2.physics.kinematics import p4_to_ptetaphim, ptetaphim_to_p4

M_H, M_B = 125.0, 4.7


def _decay(parent: np.ndarray, mass: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay of parent (N, 4) into equal masses; two (N, 4) lab four-momenta."""
    n = len(parent)
    m = np.sqrt(np.maximum(parent[:, 0] ** 2 - (parent[:, 1:] ** 2).sum(1), 0))
    p = np.sqrt(np.maximum(m**2 / 4 - mass**2, 0))
    cos_t, phi = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    d = p[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], 1)
    e = np.sqrt(p**2 + mass**2)
    beta = parent[:, 1:] / parent[:, :1]
    b2 = (beta**2).sum(1, keepdims=True)
    gamma = 1 / np.sqrt(1 - b2)
    out = []
    for sign in (1, -1):
        q = np.concatenate([e[:, None], sign * d], 1)
        bp = (beta * q[:, 1:]).sum(1, keepdims=True)
        g2 = np.where(b2 > 0, (gamma - 1) / np.where(b2 > 0, b2, 1), 0)
        out.append(
            np.concatenate([gamma * (q[:, :1] + bp), q[:, 1:] + g2 * bp * beta + gamma * beta * q[:, :1]], 1)
        )
    return out[0], out[1]


def toy_signal(n: int, seed: int = 0) -> PartonEvents:
    """HH → bb̄bb̄ toy events (Higgs pT ~ 100 GeV, back to back in φ, random rapidities), h1 = higher pT."""
    rng = np.random.default_rng(seed)
    pt = rng.gamma(3.0, 45.0, n) + 20
    phi = rng.uniform(-np.pi, np.pi, n)
    h1 = ptetaphim_to_p4(pt * 1.05, rng.normal(0, 1, n), phi, np.full(n, M_H))
    h2 = ptetaphim_to_p4(pt, rng.normal(0, 1, n), phi + np.pi, np.full(n, M_H))
    higgs = np.stack([h1, h2], 1)  # (N, 2, 4)
    b = np.stack([*_decay(h1, M_B, rng), *_decay(h2, M_B, rng)], 1)  # (N, 4, 4)
    z = np.zeros(n)
    return PartonEvents(
        b=b,
        weight=np.full(n, 0.01),
        kappa_terms=np.zeros((n, 3)),
        kappa=np.full(n, 1.0),
        process=np.ones(n, np.int8),
        x1=z,
        x2=z,
        scale=z,
        incoming=np.full((n, 2), 21),
        extra=None,
        extra_pdg=None,
        higgs=higgs,
        sqrt_s_tev=13.0,
    )


def _jagged(values: np.ndarray, mask: np.ndarray, dtype) -> ak.Array:
    return ak.unflatten(values[mask].astype(dtype), mask.sum(1))


def write_delphes_like(
    path: Path,
    jets,
    partons: PartonEvents,
    *,
    n_background: int = 0,
    slash_names=False,
    drop: tuple[str, ...] = (),
) -> None:
    """Write a ROOT file in Delphes' branch schema: tree "Delphes", jagged `Jet.PT`, ... with `Jet_size` counters.

    Signal Particle record per event: p p g g H H(copy) H H(copy) b b̄ b b̄ plus a gluon-splitting b b̄ decoy;
    the b quarks hang off the Higgs *copies*, as in Pythia's record. `n_background` events without
    Higgs bosons (only the decoy b b̄): the last `n_background` events.
    """
    n = len(jets)
    mask = jets.mask
    jet = {
        "PT": _jagged(jets.pt, mask, np.float32),
        "Eta": _jagged(jets.eta, mask, np.float32),
        "Phi": _jagged(jets.phi, mask, np.float32),
        "Mass": _jagged(jets.mass, mask, np.float32),
        "BTag": _jagged(jets.btag.astype(np.uint32) | 2, mask, np.uint32),  # bit 1 set: a second tagger
        "Flavor": _jagged(jets.flavour.astype(np.int32), mask, np.int32),
    }
    b_pt, b_eta, b_phi, b_m = p4_to_ptetaphim(partons.b)  # (N, 4)
    h_pt, h_eta, h_phi, h_m = p4_to_ptetaphim(partons.higgs)  # (N, 2)
    # particle table per event (N, 14): p p g g H1 H1' H2 H2' b b̄ b b̄ | decoy b b̄ from gluon 3
    pid = np.tile([2212, 2212, 21, 21, 25, 25, 25, 25, 5, -5, 5, -5, 5, -5], (n, 1))
    m1 = np.tile([-1, -1, 0, 1, 2, 4, 2, 6, 5, 5, 7, 7, 3, 3], (n, 1))
    z = np.zeros(n)
    kin_pt = np.stack(
        [z, z, z + 30, z + 25, h_pt[:, 0], h_pt[:, 0], h_pt[:, 1], h_pt[:, 1], *b_pt.T, z + 33, z + 31], 1
    )
    kin_eta = np.stack(
        [z + 9, z - 9, z, z, h_eta[:, 0], h_eta[:, 0], h_eta[:, 1], h_eta[:, 1], *b_eta.T, z + 1, z + 1.1], 1
    )
    kin_phi = np.stack(
        [z, z, z, z, h_phi[:, 0], h_phi[:, 0], h_phi[:, 1], h_phi[:, 1], *b_phi.T, z + 2, z + 2.1], 1
    )
    kin_m = np.stack(
        [z + 0.938, z + 0.938, z, z, h_m[:, 0], h_m[:, 0], h_m[:, 1], h_m[:, 1], *b_m.T, z + 4.7, z + 4.7], 1
    )
    full = np.ones_like(pid, dtype=bool)
    if n_background:
        # background events: p p g g and the decoy pair only (rows 0-3, 12, 13)
        keep_bkg = np.zeros(14, bool)
        keep_bkg[[0, 1, 2, 3, 12, 13]] = True
        full[-n_background:] = keep_bkg  # the decoy's mother (gluon 3) keeps index 3 after compaction
    particle = {
        "PID": _jagged(pid, full, np.int32),
        "M1": _jagged(m1, full, np.int32),
        "M2": _jagged(np.full_like(m1, -1), full, np.int32),
        "Status": _jagged(np.full_like(pid, 1), full, np.int32),
        "PT": _jagged(kin_pt, full, np.float32),
        "Eta": _jagged(kin_eta, full, np.float32),
        "Phi": _jagged(kin_phi, full, np.float32),
        "Mass": _jagged(kin_m, full, np.float32),
    }
    one = np.ones((n, 1), bool)
    met = {
        "MET": _jagged(jets.met[:, None], one, np.float32),
        "Phi": _jagged(jets.met_phi[:, None], one, np.float32),
    }
    lep_e = np.arange(3)[None, :] < np.asarray(jets.n_electrons)[:, None]
    lep_m = np.arange(3)[None, :] < np.asarray(jets.n_muons)[:, None]
    electron = {"PT": _jagged(np.full((n, 3), 25.0), lep_e, np.float32)}
    muon = {"PT": _jagged(np.full((n, 3), 30.0), lep_m, np.float32)}
    collections = {"Jet": jet, "Particle": particle, "MissingET": met, "Electron": electron, "Muon": muon}
    data = {
        name: ak.zip({k: v for k, v in fields.items() if f"{name}.{k}" not in drop})
        for name, fields in collections.items()
    }
    with uproot.recreate(path) as f:
        f.mktree(
            "Delphes",
            {name: arr.type.content for name, arr in data.items()},
            field_name=lambda outer, inner: f"{outer}.{inner}",
            counter_name=lambda counted: f"{counted}_size",
        )
        f["Delphes"].extend(data)


@pytest.fixture(scope="module")
def signal_sample():
    partons = toy_signal(600, seed=3)
    jets = fast_detector(partons, np.random.default_rng(4))
    return partons, jets


def test_resolve_branch_spellings():
    delphes_keys = [
        "Event",
        "Jet",
        "Jet/Jet.fUniqueID",
        "Jet/Jet.PT",
        "Jet/Jet.Eta",
        "Jet_size",
        "Particle",
        "Particle/Particle.M1",
    ]
    found = resolve_branches(delphes_keys, ["Jet.PT", "Jet.Eta", "Jet.Phi", "Particle.M1"])
    assert found == {"Jet.PT": "Jet/Jet.PT", "Jet.Eta": "Jet/Jet.Eta", "Particle.M1": "Particle/Particle.M1"}
    assert resolve_branches(["Jet.PT", "Jet_Eta"], ["Jet.PT", "Jet.Eta"]) == {
        "Jet.PT": "Jet.PT",
        "Jet.Eta": "Jet_Eta",
    }
    assert resolve_branches(["Particle/Particle.M"], ["Particle.Mass"]) == {
        "Particle.Mass": "Particle/Particle.M"
    }


def test_higgs_b_quarks_orders_by_higgs_pt_and_ignores_decoys():
    # event 0: H(idx 2, pT 50) and H(idx 3, pT 80); b's at 4..7; a g->bb decoy at 8, 9
    pid = ak.Array([[21, 21, 25, 25, -5, 5, 5, -5, 5, -5], [21, 5, -5], [25, 25, 5, -5, 5]])
    m1 = ak.Array([[-1, -1, 0, 1, 2, 2, 3, 3, 0, 0], [-1, 0, 0], [-1, -1, 0, 0, 1]])
    pt = ak.Array([[0, 0, 50, 80, 11, 12, 13, 14, 15, 16], [0, 1, 2], [40, 30, 1, 2, 3]])
    kin = {"PT": pt, "Eta": pt * 0.01, "Phi": pt * 0.0, "Mass": pt * 0.0 + 4.7}
    quarks, higgs, ok = higgs_b_quarks(pid, m1, kin)
    assert ok.tolist() == [
        True,
        False,
        False,
    ]  # event 2 has three b's from Higgs bosons: not a clean 2h decay
    np.testing.assert_allclose(quarks[0, :, 0], [13, 14, 12, 11])  # h1 = the pT-80 Higgs; b before b̄
    np.testing.assert_allclose(higgs[0, :, 0], [80, 50])
    assert np.isnan(quarks[1:]).all()


def test_round_trip_matches_the_generator_selection(tmp_path, signal_sample):
    partons, jets = signal_sample
    root = tmp_path / "signal.root"
    write_delphes_like(root, jets, partons)
    out = tmp_path / "signal.h5"
    attrs = convert_delphes(
        root, out, kappa_inputs=[1.0], kappa=1.0, cross_section_fb=6.0, sqrt_s_tev=13.0, step_size=97
    )  # several chunks with a remainder
    expected = finalize_events(jets, partons, kappa_input=np.ones(len(jets)))
    with h5py.File(out) as h5:
        got = {k: h5[k][()] for k in expected if k in h5}
        assert attrs["n_read"] == 600 and attrs["n_signal_read"] == 600
        assert "WEIGHTS/kappa_terms" not in h5
    n_sel = len(expected["TRUTH/process"])
    assert n_sel > 25 and attrs["n_selected"] == n_sel
    for key in (
        "INPUTS/Source/MASK",
        "INPUTS/Source/btag",
        "TARGETS/h1/b1",
        "TARGETS/h1/b2",
        "TARGETS/h2/b1",
        "TARGETS/h2/b2",
        "CLASSIFICATIONS/EVENT/signal",
        "TRUTH/n_higgs_matched",
        "TRUTH/n_jets",
        "GLOBAL_EXTRA/n_electrons",
        "GLOBAL_EXTRA/n_muons",
        "TRUTH/process",
    ):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    for key in (
        "INPUTS/Source/pt",
        "INPUTS/Source/eta",
        "INPUTS/Source/phi",
        "INPUTS/Source/mass",
        "TRUTH/b_pt",
        "TRUTH/b_eta",
        "TRUTH/m_hh",
        "TRUTH/higgs_pt",
        "GLOBAL_EXTRA/met",
    ):
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-5, atol=2e-4, err_msg=key)
    assert (got["TRUTH/n_higgs_matched"] == 2).mean() > 0.5  # most selected toy events are fully matched
    # weights: σ / N_read per event, so Σ over the file = σ × efficiency
    np.testing.assert_allclose(got["WEIGHTS/weight"].sum(), 6.0 * n_sel / 600)
    np.testing.assert_array_equal(got["TRUTH/kappa"], np.ones(n_sel, np.float32))


def test_background_events_and_kappa_draw(tmp_path, signal_sample):
    partons, jets = signal_sample
    root = tmp_path / "mixed.root"
    write_delphes_like(root, jets, partons, n_background=200)
    out = tmp_path / "mixed.h5"
    convert_delphes(root, out, kappa_inputs=[-5.0, 1.0, 5.0], seed=7)
    with h5py.File(out) as h5:
        signal = h5["CLASSIFICATIONS/EVENT/signal"][()]
        targets = h5["TARGETS/h1/b1"][()]
        kappa_in = h5["INPUTS/Kappa/kappa"][()]
        truth_kappa = h5["TRUTH/kappa"][()]
        assert h5.attrs["weights_normalisation"].startswith("1 / n_read")
        np.testing.assert_allclose(h5["WEIGHTS/weight"][()], 1 / 600)
    assert 0 < (signal == 0).sum() < len(signal)
    assert (targets[signal == 0] == -1).all()  # no truth for background
    assert set(np.unique(kappa_in)) == {-5.0, 1.0, 5.0}
    assert np.isnan(truth_kappa).all()  # no --kappa given: the generated κλ is unknown
    out2 = tmp_path / "mixed2.h5"
    convert_delphes(root, out2, kappa_inputs=[-5.0, 1.0, 5.0], seed=7)
    with h5py.File(out2) as h5:  # same seed, same file
        np.testing.assert_array_equal(h5["INPUTS/Kappa/kappa"][()], kappa_in)


def test_chunks_bound_memory(tmp_path, signal_sample):
    partons, jets = signal_sample
    root = tmp_path / "s.root"
    write_delphes_like(root, jets, partons)
    sizes = [len(c) for c in iter_delphes(root, step_size=128)]
    assert sizes == [128, 128, 128, 128, 88] and count_events(root) == 600


def test_cli_round_trip(tmp_path, run_cli, signal_sample):
    partons, jets = signal_sample
    root = tmp_path / "s.root"
    write_delphes_like(root, jets.take(np.arange(100)), partons.take(np.arange(100)))
    out = tmp_path / "s.h5"
    rc, stdout, stderr = run_cli(
        "convert-delphes", root, out, "--kappa-input", "1", "--seed", "3", "--no-progress"
    )
    assert rc == 0, stderr
    assert "of 100 events pass the four-tag cut" in stdout
    with h5py.File(out) as h5:
        assert h5["INPUTS/Source/pt"].shape[1] == 10


@pytest.mark.parametrize("case", ["not_root", "no_jet_branch", "no_tree", "missing_file", "bad_kappa"])
def test_bad_input_exit_2_one_line_no_output(tmp_path, run_cli, signal_sample, case):
    partons, jets = signal_sample
    root = tmp_path / "in.root"
    args = []
    if case == "not_root":
        root.write_text("this is not a ROOT file\n")
        key = "not a readable ROOT file"
    elif case == "no_jet_branch":
        write_delphes_like(root, jets.take(np.arange(20)), partons.take(np.arange(20)), drop=("Jet.PT",))
        key = "Delphes/Jet.PT"
    elif case == "no_tree":
        with uproot.recreate(root) as f:
            f["Other"] = {"x": np.arange(3)}
        key = "expected a TTree named 'Delphes'"
    elif case == "missing_file":
        root = tmp_path / "absent.root"
        key = "no such file"
    else:
        write_delphes_like(root, jets.take(np.arange(20)), partons.take(np.arange(20)))
        args = ["--kappa-input", "1,abc"]
        key = "--kappa-input"
    out = tmp_path / "out.h5"
    rc, stdout, stderr = run_cli("convert-delphes", root, out, "--no-progress", *args)
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


def test_usage_error_is_one_line(run_cli):
    rc, _, stderr = run_cli("convert-delphes", "only_input.root")
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and "output" in stderr


def test_library_errors_are_typed(tmp_path, signal_sample):
    partons, jets = signal_sample
    root = tmp_path / "in.root"
    write_delphes_like(
        root, jets.take(np.arange(20)), partons.take(np.arange(20)), drop=REQUIRED_BRANCHES[-1:]
    )
    with pytest.raises(DataError, match="Jet.BTag"):
        convert_delphes(root, tmp_path / "x.h5", kappa_inputs=[1.0])
    with pytest.raises(InputError, match="cross section"):
        convert_delphes(root, tmp_path / "x.h5", kappa_inputs=[1.0], cross_section_fb=-1.0)
    assert not (tmp_path / "x.h5").exists()
