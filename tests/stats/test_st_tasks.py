"""The κλ work on Dask workers: the store's chunks are read there, every phase runs as tasks, several
configs share one cluster and one pass, and the results equal the serial computation exactly."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from spanet2.events.store import open_store
from spanet2.stats.config import load_scan_config
from spanet2.stats.likelihood import KappaLikelihood
from spanet2.stats.luminosity import IntervalSettings, equivalent_luminosities, intervals_at
from spanet2.stats.parallel import TaskRunner, dask_client
from spanet2.stats.scan import prepare_templates, prepare_templates_batch, run_scans


def _chunks(store_path, samples) -> int:
    store = open_store(store_path)
    total = 0
    for sample in samples:
        arr = store.array(sample, "spanet2/score")
        total += math.ceil(arr.shape[0] / arr.chunks[0])
    return total


def test_store_chunks_are_read_on_the_workers(st_config, st_store):
    config = load_scan_config(st_config())
    serial, _, serial_norm = prepare_templates(config)  # no client: chunk tasks run in this process
    assert set(serial_norm["readers"]) == {f"{os.uname().nodename}:{os.getpid()}"}
    with dask_client(None, n_workers=2) as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        worker_pids = set(client.run(os.getpid).values())
        templates, _, norm = prepare_templates(config, client)
    readers = norm["readers"]
    pids = {int(who.rsplit(":", 1)[1]) for who in readers}
    assert os.getpid() not in pids and pids <= worker_pids  # the driver read no chunk
    assert sum(readers.values()) == _chunks(st_store, ["signal", "background"])  # every chunk once
    for method, tpl in templates.items():
        assert np.allclose(tpl.signal_terms, serial[method].signal_terms, rtol=1e-12, atol=0)
        assert np.allclose(tpl.background, serial[method].background, rtol=1e-12, atol=0)
        assert tpl.n_signal_mc == serial[method].n_signal_mc > 0


def test_batch_of_configs_on_one_cluster_equals_the_serial_computation(st_config, tmp_path):
    a = load_scan_config(
        st_config("a.yaml", output=str(tmp_path / "out_a"), equivalent_luminosity={"reference": "spanet2"})
    )
    b = load_scan_config(
        st_config(
            "b.yaml",
            output=str(tmp_path / "out_b"),
            asimov="background+sm",
            luminosities=[300],
            binning={"low": 250, "high": 1000, "bins": 6},
        )
    )
    results = run_scans([a, b], scheduler="local", n_workers=2, plots=False)
    assert [r.computed_points for r in results] == [2 * 2 * 46, 2 * 46]
    # one pass over the store for both configs: every chunk read once, on the workers
    readers = results[0].normalisation["readers"]
    assert readers == results[1].normalisation["readers"]
    assert sum(readers.values()) == _chunks(a.store, ["signal", "background"])
    for config, result in zip((a, b), results, strict=True):
        templates, _, _ = prepare_templates(config)
        settings = IntervalSettings(
            config.kappa_grid, config.likelihood, pl_threshold=config.pl_threshold, cls_level=config.cls_level
        )
        for method, tpl in templates.items():
            assert tpl.fingerprint() == result.templates[method].fingerprint()
            for lumi in config.luminosities:
                serial = intervals_at(tpl, lumi, settings)
                for stat, iv in serial.items():
                    got = result.intervals[method][lumi][stat]
                    assert got.lower == pytest.approx(iv.lower, abs=1e-12)
                    assert got.upper == pytest.approx(iv.upper, abs=1e-12)
                    assert len(got.pieces) == len(iv.pieces)
                model = KappaLikelihood(tpl, lumi, config.likelihood)
                curve = result.curves[method][lumi]
                assert np.allclose(model.cls(np.asarray(curve["kappa_cls"])), curve["cls"], atol=1e-12)
        if config.equivalent_reference:
            for lumi in config.luminosities:
                serial = equivalent_luminosities(
                    templates["spanet2"], templates["min_dr_dnn"], lumi, settings
                )
                got = result.equivalent["min_dr_dnn"][lumi]
                for stat in ("pl", "cls"):
                    for what in ("width", "lower", "upper"):
                        assert got[stat][what] == pytest.approx(serial[stat][what], rel=1e-12)
                        assert got[stat][what] > lumi  # the weaker method needs more data
    assert (
        results[1].intervals["spanet2"][300]["pl"].lower
        < 1.0
        < results[1].intervals["spanet2"][300]["pl"].upper
    )


def test_prepare_batch_reads_each_store_chunk_once_for_two_binnings(st_config, st_store):
    a = load_scan_config(st_config("a.yaml"))
    b = load_scan_config(st_config("b.yaml", binning={"low": 250, "high": 900, "bins": 4}))
    (ta, _, na), (tb, _, _) = prepare_templates_batch([a, b], TaskRunner(None))
    assert sum(na["readers"].values()) == _chunks(st_store, ["signal", "background"])
    assert ta["spanet2"].background.size == 10 and tb["spanet2"].background.size == 4
    single, _, _ = prepare_templates(b)
    assert np.array_equal(tb["spanet2"].background, single["spanet2"].background)


def test_scan_cli_batch_with_store_override(run_cli, st_config, st_store, tmp_path):
    a = st_config(
        "a.yaml", output=str(tmp_path / "out_a"), store="/nonexistent/events.zarr", luminosities=[139]
    )
    b = st_config(
        "b.yaml", output=str(tmp_path / "out_b"), store="/nonexistent/events.zarr", luminosities=[300]
    )
    rc, out, err = run_cli("scan", a, b, "--store", st_store, "--scheduler", "synchronous", "--no-plots")
    assert rc == 0, err
    assert out.count("| Method | L (fb⁻¹) |") == 2 and f"## {a}" in out and f"## {b}" in out
    for name in ("out_a", "out_b"):
        record = json.loads((tmp_path / name / "results.json").read_text())
        assert record["config"]["store"] == str(st_store)
    rc, _, err = run_cli("scan", a, b, "--output", tmp_path / "x", "--scheduler", "synchronous")
    assert rc == 2 and "--output" in err and "only with one config" in err
    same = st_config("c.yaml", output=str(tmp_path / "out_a"))
    rc, _, err = run_cli("scan", a, same, "--store", st_store, "--scheduler", "synchronous", "--no-plots")
    assert rc == 2 and "give each config its own output" in err and len(err.strip().splitlines()) == 1
