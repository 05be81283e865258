"""Nuisance parameters profiled by pyhf fits (normalisations, signal theory, per-bin MC statistics) and the
pyhf PatchSet a scan writes (HEPData convention), read back with pyhf."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from spanet2.stats.config import load_scan_config
from spanet2.stats.likelihood import KappaLikelihood, LikelihoodSettings
from spanet2.stats.parallel import PointLog
from spanet2.stats.scan import run_scan

KAPPAS = np.array([-6.0, -1.0, 1.0, 2.4, 5.0, 11.0])


def _patched_cls(folder, kappa: float, *, nuisances: bool) -> float:
    import pyhf

    pyhf.set_backend("numpy")
    bkg_only = pyhf.Workspace(json.loads((folder / "BkgOnly.json").read_text()))
    patchset = pyhf.PatchSet(json.loads((folder / "patchset.json").read_text()))
    assert patchset.labels == ["kappa_lambda"] and len(patchset.patches) > 10
    workspace = patchset.apply(bkg_only, (kappa,))  # checks the background-only digest too
    settings = (
        {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}} if nuisances else None
    )
    model = workspace.model(modifier_settings=settings) if settings else workspace.model()
    return float(pyhf.infer.hypotest(1.0, workspace.data(model), model, test_stat="qtilde"))


def _grid_cls(out_dir, method: str, lumi: float, kappa: float) -> float:
    records = PointLog(out_dir / "points.jsonl").records.values()
    (rec,) = [r for r in records if r["method"] == method and r["lumi_ifb"] == lumi and r["kappa"] == kappa]
    return rec["cls"]


def test_patchset_round_trip_reproduces_a_cls_point(st_config, tmp_path):
    config = load_scan_config(st_config())
    run_scan(
        config,
        scheduler="synchronous",
        plots=False,
        patchset_dir=tmp_path / "patchsets",
        hepdata="ins1234567",
    )
    folder = tmp_path / "patchsets" / "spanet2_L300"
    assert sorted(p.name for p in folder.iterdir()) == ["BkgOnly.json", "patchset.json"]
    assert len(json.loads((folder / "patchset.json").read_text())["patches"]) == len(config.kappa_grid)
    ours = _grid_cls(tmp_path / "out", "spanet2", 300.0, 5.0)
    assert 0.0 < ours < 1.0
    assert _patched_cls(folder, 5.0, nuisances=False) == pytest.approx(ours, abs=1e-5)
    # a patch for another κλ is another hypothesis: a different CLs
    assert abs(_patched_cls(folder, -8.0, nuisances=False) - ours) > 1e-3


def test_nuisance_scan_runs_pyhf_fits_on_the_workers(st_config, tmp_path):
    unc = {"background_norm": 0.05, "signal_theory": 0.1, "mc_stat": True}
    common = {
        "methods": [{"name": "spanet2", "threshold": 0.9}],
        "luminosities": [300],
        "kappa_grid": {"start": -10, "stop": 15, "step": 2.5},
    }
    config = load_scan_config(st_config(uncertainties=unc, **common))
    plain = load_scan_config(st_config("plain.yaml", output=str(tmp_path / "plain"), **common))
    result = run_scan(config, n_workers=2, plots=False, patchset_dir=tmp_path / "ps", hepdata="ins1234567")
    reference = run_scan(plain, scheduler="synchronous", plots=False)
    for stat in ("pl", "cls"):
        ours, base = result.intervals["spanet2"][300][stat], reference.intervals["spanet2"][300][stat]
        assert ours.closed and ours.lower < base.lower and ours.upper > base.upper  # nuisances loosen
        assert ours.width < 2.0 * base.width  # 5 % on ~10³ background events: ~1.5× wider
    # the PatchSet carries the nuisances: pyhf on the patched workspace gives the scan's CLs at a grid point
    assert _patched_cls(tmp_path / "ps" / "spanet2_L300", 5.0, nuisances=True) == pytest.approx(
        _grid_cls(tmp_path / "out", "spanet2", 300.0, 5.0), abs=1e-6
    )
    spec = json.loads((tmp_path / "ps" / "spanet2_L300" / "BkgOnly.json").read_text())
    types = {m["type"] for m in spec["channels"][0]["samples"][0]["modifiers"]}
    assert types == {"normsys", "staterror"}


def test_vanishing_nuisances_agree_with_the_closed_forms(st_templates):
    """pyhf fits with nuisances of negligible size must give the closed forms (where the two must agree)."""
    tpl = st_templates["spanet2"]
    tiny = dataclasses.replace(tpl, background_sumw2=tpl.background_sumw2 * 1e-2)  # MC error ÷ 10
    closed = KappaLikelihood(tpl, 300.0, LikelihoodSettings())
    fitted = KappaLikelihood(
        tiny,
        300.0,
        LikelihoodSettings(background_norm_uncertainty=1e-3, signal_theory_uncertainty=1e-3, mc_stat=True),
    )
    assert fitted.uses_pyhf("pl") and fitted.uses_pyhf("cls") and not closed.uses_pyhf("pl")
    # (narrower constraints than these make pyhf's scipy fits unreliable: measured CLs ≈ 1 at MC error ÷ 100)
    a, b = closed.twice_nll(KAPPAS), fitted.twice_nll(KAPPAS)
    assert np.allclose(a - a.min(), b - b.min(), rtol=0.02, atol=1e-3)
    assert np.allclose(closed.cls(KAPPAS), fitted.cls(KAPPAS), atol=5e-3)
    assert np.all(fitted.cls(KAPPAS) >= closed.cls(KAPPAS) - 1e-9)  # nuisances only loosen


def test_mc_stat_loosens_and_needs_background_in_every_bin(st_templates):
    tpl = st_templates["spanet2"]
    plain = KappaLikelihood(tpl, 300.0, LikelihoodSettings())
    mc = KappaLikelihood(tpl, 300.0, LikelihoodSettings(mc_stat=True))
    assert np.all(mc.background_mc_error > 0) and np.all(mc.background_mc_error < mc.background)
    a, b = plain.twice_nll(KAPPAS), mc.twice_nll(KAPPAS)
    assert np.all(b - b.min() <= a - a.min() + 1e-6) and (b - b.min()).max() < (a - a.min()).max()
    empty = dataclasses.replace(
        tpl, background=np.where(np.arange(tpl.background.size) == 3, 0.0, tpl.background)
    )
    with pytest.raises(ValueError, match="mc_stat needs background MC in every m_HH bin"):
        KappaLikelihood(empty, 300.0, LikelihoodSettings(mc_stat=True))
