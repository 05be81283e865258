"""`spanet2 scan` / `spanet2 lumi` end to end on a Zarr store with Dask; resume; morphing; bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spanet2.stats.config import load_scan_config
from spanet2.stats.likelihood import KappaLikelihood
from spanet2.stats.scan import prepare_templates, run_scan


def _intervals(path):
    return json.loads((path / "results.json").read_text())["intervals"]


def test_scan_cli_on_a_local_dask_cluster(run_cli, st_config, tmp_path):
    import pyhf

    config = st_config(equivalent_luminosity={"reference": "spanet2"})
    ws_dir = tmp_path / "ws"
    rc, out, err = run_cli(
        "scan",
        config,
        "--workers",
        "2",
        "--workspace",
        ws_dir,
        "--workspace-kappa",
        "1",
        "--workspace-kappa",
        "5",
    )
    assert rc == 0, err
    assert "| Method | L (fb⁻¹) | PL lower | PL upper | PL Δκλ | CLs lower | CLs upper | CLs Δκλ |" in out
    assert "| Mixing κ SPANet2 | 139 |" in out and "| min-ΔR + DNN | 300 |" in out
    assert "L′ by Δκλ" in out
    out_dir = tmp_path / "out"
    record = json.loads((out_dir / "results.json").read_text())
    assert record["points"] == {"computed": 2 * 2 * 46, "reused": 0}
    assert len((out_dir / "points.jsonl").read_text().splitlines()) == 2 * 2 * 46
    assert record["provenance"]["versions"]["pyhf"]
    assert (out_dir / "provenance.json").exists() and (out_dir / "tables.md").read_text().startswith(
        "| Method"
    )
    for lumi in (139, 300):
        assert (out_dir / f"scan_L{lumi}.png").stat().st_size > 1000
        assert (out_dir / f"scan_L{lumi}.pdf").stat().st_size > 1000
    sp = record["intervals"]["spanet2"]
    assert (
        sp["139.0"]["pl"]["lower"]
        < sp["300.0"]["pl"]["lower"]
        < sp["300.0"]["pl"]["upper"]
        < sp["139.0"]["pl"]["upper"]
    )
    # the written workspace is the fitted model: pyhf's NLL difference between κλ = 1 and 5 matches ours
    cfg = load_scan_config(config)
    templates, _, _ = prepare_templates(cfg)
    model = KappaLikelihood(templates["spanet2"], 139, cfg.likelihood)
    nll = []
    for kappa in (1, 5):
        ws = pyhf.Workspace(json.loads((ws_dir / f"spanet2_L139_k{kappa}.json").read_text()))
        pdf = ws.model()
        nll.append(float(-2 * pdf.logpdf(np.array([1.0]), np.asarray(ws.data(pdf)))[0]))
    ours = model.twice_nll(np.array([1.0, 5.0]))
    assert nll[1] - nll[0] == pytest.approx(ours[1] - ours[0], abs=1e-6)


def test_killed_scan_reruns_only_the_missing_points(st_config, tmp_path):
    config = load_scan_config(st_config())
    first = run_scan(config, scheduler="synchronous", plots=False)
    assert (first.computed_points, first.reused_points) == (184, 0)
    log = tmp_path / "out" / "points.jsonl"
    lines = log.read_text().splitlines()
    # what a kill leaves: the first 57 finished points and half of the next line
    log.write_text("\n".join(lines[:57]) + "\n" + lines[57][: len(lines[57]) // 2])
    second = run_scan(config, scheduler="synchronous", plots=False)
    assert (second.computed_points, second.reused_points) == (184 - 57, 57)
    assert _intervals(tmp_path / "out") == json.loads(json.dumps(first.to_dict()["intervals"]))
    third = run_scan(config, scheduler="synchronous", plots=False)
    assert (third.computed_points, third.reused_points) == (0, 184)
    changed = load_scan_config(st_config(pl_threshold=3.92, asimov="background+sm"))
    fourth = run_scan(changed, scheduler="synchronous", plots=False)
    assert fourth.computed_points == 184  # other settings: nothing stale is reused


def test_lumi_cli_width_vs_luminosity_and_equivalent_luminosity(run_cli, st_config, tmp_path):
    config = st_config(
        lumi_scan={"start": 100, "stop": 3000, "num": 5, "spacing": "log"},
        equivalent_luminosity={"reference": "spanet2"},
        kappa_grid={"start": -20, "stop": 25, "step": 0.5},
    )
    rc, out, err = run_cli("lumi", config, "--scheduler", "synchronous")
    assert rc == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    widths = [
        record["intervals"]["spanet2"][k]["pl"]["width"]
        for k in sorted(record["intervals"]["spanet2"], key=float)
    ]
    assert len(widths) == 7 and all(a > b for a, b in zip(widths[:-1], widths[1:], strict=False))
    eq = record["equivalent_luminosity"]["min_dr_dnn"]["300.0"]
    assert eq["pl"]["width"] > 300 and eq["cls"]["width"] > 300  # min-ΔR needs more data than SPANet2
    assert (tmp_path / "out" / "delta_kappa_vs_lumi.png").exists()
    assert (tmp_path / "out" / "delta_kappa_vs_lumi.pdf").exists()
    assert "| min-ΔR + DNN | 300 |" in out


@pytest.mark.parametrize("kappas", [(-2.0, 1.0, 5.0), (-2.0, 1.0, 5.0, 9.0)])
def test_morphed_discrete_samples_equal_per_event_terms(st_config, kappas):
    base = load_scan_config(st_config())
    morph = load_scan_config(
        st_config(signal={"samples": [{"name": f"signal_k{k:g}", "kappa": k} for k in kappas]})
    )
    a, _, _ = prepare_templates(base)
    b, _, _ = prepare_templates(morph)
    for method in a:
        assert np.allclose(a[method].signal_terms, b[method].signal_terms, rtol=1e-9, atol=1e-15)


def test_reference_normalisation_at_14_tev(st_config):
    generated = load_scan_config(st_config(luminosities=[300]))
    scaled = load_scan_config(
        st_config(
            luminosities=[300],
            sqrt_s_tev=14,
            signal={"normalisation": "reference", "reference_curve": "lhchwg_nnlo_13"},
        )
    )
    a = run_scan(generated, scheduler="synchronous", plots=False, output=generated.output + "_a")
    b = run_scan(scaled, scheduler="synchronous", plots=False, output=generated.output + "_b")
    norm = b.normalisation
    assert norm["mode"] == "reference" and np.allclose(
        norm["reference_coefficients_fb"], [83.17, -59.57, 13.07], atol=0.02
    )
    # σ(κλ) now follows the 14 TeV reference: a bigger signal, a narrower interval
    assert b.intervals["spanet2"][300]["pl"].width < a.intervals["spanet2"][300]["pl"].width


def test_best_threshold_selection_is_recorded(st_config):
    config = load_scan_config(
        st_config(methods=[{"name": "spanet2", "threshold": "best"}], selection={"min_background": 100})
    )
    templates, selection, _ = prepare_templates(config)
    assert "best S/sqrt(B)" in selection["spanet2"]
    assert 139 * templates["spanet2"].background.sum() >= 100


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"methods": [{"name": "spanet2", "threshold": 0.9}, {"name": "transformer"}]},
            "no method 'transformer'",
        ),
        ({"methods": [{"name": "spanet2", "threshold": 1.0}]}, "empty selection"),
        ({"kappa_grid": {"start": -1, "stop": 3, "step": 0.5}}, "widen kappa_grid"),
        ({"luminosities": [0, 139]}, "luminosity must be positive"),
        ({"luminosities": [-300]}, "luminosity must be positive"),
        ({"asimov": "signal"}, "asimov"),
        ({"kappa_grdi": [1, 2, 3]}, "kappa_grdi: unknown key"),
        ({"store": "/nonexistent/events.zarr"}, "event store not found"),
        ({"signal": {"normalisation": "reference", "generated_curve": "nope"}}, "unknown curve"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_no_output(run_cli, st_config, tmp_path, overrides, message):
    config = st_config(**overrides)
    rc, out, err = run_cli("scan", config, "--scheduler", "synchronous", "--no-plots")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_bins_without_background_mc_are_merged(st_config):
    fine = {"low": 200, "high": 2500, "bins": 46}
    merged = load_scan_config(st_config(binning=fine, methods=[{"name": "spanet2", "threshold": 0.99}]))
    raw = load_scan_config(
        st_config(binning={**fine, "min_background_mc": 0}, methods=[{"name": "spanet2", "threshold": 0.99}])
    )
    tpl, _, _ = prepare_templates(merged)
    unmerged, _, _ = prepare_templates(raw)
    assert (unmerged["spanet2"].background == 0).any()  # the tight cut empties high-m_HH bins
    assert tpl["spanet2"].background.size < 46 and (tpl["spanet2"].background > 0).all()
    assert np.isclose(tpl["spanet2"].background.sum(), unmerged["spanet2"].background.sum())
    assert np.allclose(tpl["spanet2"].signal_terms.sum(axis=1), unmerged["spanet2"].signal_terms.sum(axis=1))
    assert tpl["spanet2"].mhh_edges[0] == 200 and tpl["spanet2"].mhh_edges[-1] == 2500


def test_a_killed_scan_process_is_resumed(st_config, tmp_path):
    """Kill a running `spanet2 scan` (SIGKILL to its process group), rerun: only the missing points run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config_path = st_config(cls_engine="pyhf")  # pyhf per point: slow enough to be killed half-way
    log = tmp_path / "out" / "points.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanet2", "scan", str(config_path), "--workers", "1", "--no-plots"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= 32:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the scan finished before it could be killed"
    finished = sum(1 for line in log.read_text().splitlines() if line.endswith("}"))
    assert 0 < finished < 184
    assert not (tmp_path / "out" / "results.json").exists()
    result = run_scan(load_scan_config(config_path), scheduler="synchronous", plots=False)
    assert (result.computed_points, result.reused_points) == (184 - finished, finished)
