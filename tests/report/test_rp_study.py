"""The study in one command: a tiny config end to end, skip-on-rerun, targeted reruns, bad configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from spanet2.report.stages import Stage, StageRunner

TINY = Path(__file__).with_name("tiny_study.yaml")


def _ran(stdout: str) -> list[str]:
    return re.findall(r"\] (\w+): running", stdout)


@pytest.mark.slow
def test_tiny_study_end_to_end_then_skip_then_rescan(tmp_path, run_cli):
    out = tmp_path / "study"
    rc, stdout, stderr = run_cli("study", TINY, "--output", out)
    assert rc == 0, stderr
    assert len(_ran(stdout)) == 18
    report = (out / "report.md").read_text()
    for heading in ("## 1. Samples", "## 2. Jet assignment", "Pairing efficiency by κλ", "## 3. Classification",
                    "## 5. κλ constraints", "### 13 TeV", "### 14 TeV", "Equivalent luminosity",
                    "Δκλ vs luminosity", "## 6. Embedding analysis", "## 7. 13 vs 14 TeV", "## 9. Provenance"):
        assert heading in report, heading
    for stem in ("energy_signal", "energy_background_m4b", "energy_background_b", "pairing_efficiency_vs_kappa",
                 "mass_plane_signal", "mass_plane_background", "mhh_selected", "pca_explained_variance",
                 "pca_correlations"):
        assert f"figures/{stem}.png" in report, stem
        assert (out / "figures" / f"{stem}.pdf").exists()
    assert "| = 4 |" in report and "| Total |" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 9
    pca = json.loads((out / "results" / "pca.json").read_text())
    assert "h1_mass" in pca["feature_names"] and len(pca["explained_variance_ratio"]) == 10
    # every stage records its wall time
    walls = {p.stem: json.loads(p.read_text())["wall_s"] for p in (out / "stages").glob("*.json")}
    assert len(walls) == 18 and all(w >= 0 for w in walls.values())
    _check_numbers(out, report)

    # an immediate rerun skips everything
    rc, stdout, _ = run_cli("study", TINY, "--output", out)
    assert rc == 0 and _ran(stdout) == []
    assert stdout.count("up to date, skipped") == 18

    # new luminosities rerun only the scan stages (and the report that shows them)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["scans"]["points"][0]["luminosities"] = [139]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    rc, stdout, stderr = run_cli("study", changed, "--output", out)
    assert rc == 0, stderr
    assert _ran(stdout) == ["scans", "lumi", "report"]
    assert "| 139 |" in (out / "report.md").read_text()


def _check_numbers(out: Path, report: str) -> None:
    """The report's figures are finite and sane, with uncertainties that are > 0 and shrink with the sample."""
    import h5py

    from spanet2.events.store import open_store
    from spanet2.generate.signal import generator_sigma_terms

    res = out / "results"
    test = json.loads((res / "test.json").read_text())
    dnn = json.loads((res / "dnn.json").read_text())
    assert 0.5 < dnn["dnn_min_dr"]["auc"] < 1 and 0 < dnn["dnn_min_dr"]["auc_err"] < 0.1
    spanet = test["spanet2"]["classification"]
    assert 0 < spanet["auc"] < 1 and 0 < spanet["auc_err"] < 0.1
    # pairing σ: Wilson, > 0, and smaller on the larger pairing test set (same κλ, same untrained min-ΔR)
    small, large = test["min_dr"]["mixing"]["pairing_by_kappa"], test["min_dr"]["pairing"]["pairing_by_kappa"]
    for k in ("-5", "1", "5"):
        assert large[k]["events"] > 2 * small[k]["events"]
        assert 0 < large[k]["err"] < small[k]["err"]
        assert 0 <= large[k]["efficiency"] <= 1
    # background-only Asimov data: the PL interval holds the minimum of σ(κλ) (the signal-poorest point)
    # the generator records its σ(κλ) terms in the event file, and the store carries them (no recomputation)
    with h5py.File(out / "data" / "classification_test.h5", "r") as f:
        recorded = np.asarray(f.attrs["sigma_terms_fb"], dtype=float)
    assert recorded == pytest.approx(generator_sigma_terms(13.0), rel=1e-12)
    carried = open_store(out / "events.zarr").sample_attrs("signal")["sigma_terms_fb"]
    assert np.asarray(carried, dtype=float) == pytest.approx(recorded, rel=1e-12)
    t0, t1, t2 = recorded
    kappa_min = -t1 / (2 * t2)
    for point in ("13TeV", "14TeV"):
        scan = json.loads((out / "scans" / point / "results.json").read_text())
        for method, by_lumi in scan["intervals"].items():
            for lumi, per in by_lumi.items():
                pl = per["pl"]
                assert pl["lower"] < kappa_min < pl["upper"], (point, method, lumi, pl, kappa_min)
                sigma = scan["uncertainties"]["intervals"][method][lumi]["pl"]
                assert sigma["width"] is not None and sigma["width"] > 0
        for method, by_lumi in scan["equivalent_luminosity"].items():
            for lumi, per in by_lumi.items():
                value = per["pl"]["width"]
                assert value is not None and np.isfinite(value) and value > 0, (point, method, lumi, per)
    compare = json.loads((res / "compare.json").read_text())
    for c in compare["pairing"]["spanet2_vs_min_dr"]["by_kappa"].values():
        assert c["sigma"] > 0 and ("not resolved at this sample size" in c["statement"]) == (not c["resolved"])
    scaling = json.loads((res / "scaling.json").read_text())
    assert [p["fraction"] for p in scaling["points"]["dnn_min_dr"]] == [0.5, 1.0]
    assert " ± " in report and "four-tag pass rate" in report and "Does mixing-κλ SPANet2 beat" in report
    assert "figures/scaling.png" in report and (out / "figures" / "scaling.pdf").exists()


def test_stage_runner_fingerprints_and_from(tmp_path):
    calls: list[str] = []

    def make(name):
        def run(ctx):
            (tmp_path / f"{name}.txt").write_text(name)
            calls.append(name)
            return {"outputs": [f"{name}.txt"]}

        return run

    stages = [Stage("a", make("a"), ("x",)), Stage("b", make("b"), ("y",), ("a",)), Stage("c", make("c"), (), ("b",))]
    cfg = {"x": 1, "y": 2}
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None).run(None)
    assert calls == ["a", "b", "c"]
    calls.clear()
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None).run(None)
    assert calls == []
    StageRunner(tmp_path, {"x": 1, "y": 3}, stages, progress=lambda m: None).run(None)
    assert calls == ["b", "c"]  # a change reruns the stage and what consumes it
    calls.clear()
    (tmp_path / "c.txt").unlink()  # a vanished output reruns its stage
    StageRunner(tmp_path, {"x": 1, "y": 3}, stages, progress=lambda m: None).run(None)
    assert calls == ["c"]
    calls.clear()
    StageRunner(tmp_path, {"x": 1, "y": 3}, stages, progress=lambda m: None).run(None, from_stage="b")
    assert calls == ["b", "c"]


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c["data"].update(signal_per_kappa=-3), "data.signal_per_kappa"),
        (lambda c: c["data"].update(kappa=[]), "data.kappa"),
        (lambda c: c["data"].update(kappa=["one"]), "data.kappa"),
        (lambda c: c["models"].pop("spanet2"), "models"),
        (lambda c: c["models"].update(bogus={"options": "x.json"}), "models.bogus"),
        (lambda c: c["models"]["spanet2"].update(options="configs/options/missing.json"), "models.spanet2.options"),
        (lambda c: c["scans"]["points"][0].update(luminosities=[-1]), "scans.points[0].luminosities"),
        (lambda c: c["scans"]["points"][0].update(sqrt_s_tev=8), "scans.points[0].sqrt_s_tev"),
        (lambda c: c["data"].update(test_fraction=1.5), "data.test_fraction"),
        (lambda c: c["data"].update(pairing_test={"kappa": [1]}), "data.pairing_test"),
        (lambda c: c["data"].update(pairing_test={"kappa": [1], "signal_per_kappa": -4}),
         "data.pairing_test.signal_per_kappa"),
        (lambda c: c["scaling"].update(fractions=[0.5, 2.0]), "scaling.fractions"),
        (lambda c: c["scaling"].update(models=["kappa5"]), "scaling.models"),
    ],
)
def test_bad_study_config_exit_2_one_line(tmp_path, run_cli, mutate, key):
    cfg = yaml.safe_load(TINY.read_text())
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc, stdout, stderr = run_cli("study", path, "--output", tmp_path / "out")
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and key in lines[0], stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "stages").exists()


def test_missing_study_config_and_unknown_stage(tmp_path, run_cli):
    rc, _, stderr = run_cli("study", tmp_path / "nope.yaml")
    assert rc == 2 and "nope.yaml" in stderr
    rc, _, stderr = run_cli("study", TINY, "--output", tmp_path / "o", "--from", "bogus")
    assert rc == 2 and "--from" in stderr and "bogus" in stderr


def test_pca_explained_variance_and_correlations(tmp_path):
    from spanet2.report.pca import embedding_pca, plot_explained_variance, plot_pc_correlations

    rng = np.random.default_rng(0)
    n = 2000
    latent = rng.normal(size=(n, 2))
    vectors = np.concatenate([latent * [5.0, 2.0], rng.normal(scale=0.1, size=(n, 6))], axis=1)
    features = np.stack([latent[:, 0], latent[:, 1], rng.normal(size=n)], axis=1)
    labels = (rng.random(n) < 0.5).astype(int)
    res = embedding_pca(vectors, features, ["a", "b", "noise"], labels, n_components=5)
    assert res.explained_variance_ratio[0] > 0.8 and np.all(np.diff(res.explained_variance_ratio) <= 1e-12)
    c = res.correlations["all"]
    assert abs(c[0, 0]) > 0.99 and abs(c[1, 1]) > 0.99 and abs(c[0, 2]) < 0.1
    assert set(res.correlations) == {"all", "signal", "background"}
    # bootstrap σ of the explained variance ratios: finite, positive, and about halved with 4× the events
    err = res.explained_variance_ratio_err
    assert err.shape == res.explained_variance_ratio.shape and np.all(np.isfinite(err)) and np.all(err > 0)
    assert err[0] < 0.05 and res.correlation_events["all"] == n
    big = embedding_pca(np.tile(vectors, (4, 1)) + rng.normal(scale=1e-3, size=(4 * n, 8)), np.tile(features, (4, 1)),
                        ["a", "b", "noise"], np.tile(labels, 4), n_components=5)  # fmt: skip
    assert 1.4 < err[0] / big.explained_variance_ratio_err[0] < 3.0
    from PIL import Image

    for p in plot_explained_variance(res, tmp_path / "evr") + plot_pc_correlations(res, tmp_path / "corr"):
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert np.asarray(Image.open(p).convert("L"), dtype=float).std() > 5


def test_energy_comparison_ratio(tmp_path):
    from spanet2.report.energy_compare import energy_ratio_summary, plot_energy_comparison

    rng = np.random.default_rng(1)
    same = {"x": {"v13": rng.exponential(100, 50000), "v14": rng.exponential(100, 50000),
                  "edges": np.linspace(0, 300, 16)}}
    shifted = {"x": {"v13": rng.exponential(100, 50000), "v14": rng.exponential(150, 50000),
                     "edges": np.linspace(0, 300, 16)}}
    assert energy_ratio_summary(same)["x"] < 0.05 < energy_ratio_summary(shifted)["x"]
    paths = plot_energy_comparison(same, tmp_path / "e")
    assert {p.suffix for p in paths} == {".png", ".pdf"}


def test_constraint_comparison_rows_and_skipped_references():
    from types import SimpleNamespace

    from spanet2.report.study import _constraint_comparison

    result = SimpleNamespace(
        intervals={"spanet2": {}, "min_dr_dnn": {}},
        equivalent={"min_dr_dnn": {300.0: {"pl": {"width": 150.0}}, 3000.0: {"pl": {"width": 2990.0}}}},
        uncertainties={"equivalent_luminosity": {"min_dr_dnn": {300.0: {"pl": {"width": 20.0}},
                                                                3000.0: {"pl": {"width": 100.0}}}}},  # fmt: skip
    )
    rows = _constraint_comparison(result, "14 TeV", intervals=False)
    assert [r["difference"] for r in rows] == [-150.0, -10.0]  # L′ − L at 300 and 3000 fb⁻¹
    assert rows[0]["resolved"] and not rows[1]["resolved"]  # 7.5σ vs 0.1σ
    kept = _constraint_comparison(result, "14 TeV", intervals=False, skip_references={300.0})
    assert [r["difference"] for r in kept] == [-10.0]
