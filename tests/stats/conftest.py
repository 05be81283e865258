"""Stats fixtures: one small analytic event store per session and scan-config writers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spanet2.stats.synthetic import MethodQuality, write_analytic_store

# Yields like the note after selection at 139 fb⁻¹: O(10–30) signal, O(100–1000) background events.
METHODS = {
    "spanet2": MethodQuality(signal_a=1.6, background_b=2.6, resolution=0.07),
    "min_dr_dnn": MethodQuality(signal_a=1.5, background_b=2.5, resolution=0.09),
    "spanet2_dnn": MethodQuality(signal_a=1.45, background_b=2.45, resolution=0.09),
}


@pytest.fixture(scope="session")
def st_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("st_store") / "events.zarr"
    write_analytic_store(
        path,
        n_signal=20000,
        n_background=60000,
        methods=METHODS,
        seed=7,
        kappa_samples=(-2.0, 1.0, 5.0, 9.0),
        chunk_size=32768,
    )
    return path


@pytest.fixture
def st_config(tmp_path, st_store):
    """Write a scan config (defaults below, overridden by keyword) and return its path."""

    def _write(name: str = "scan.yaml", **overrides) -> Path:
        raw = {
            "store": str(st_store),
            "output": str(tmp_path / "out"),
            "methods": [
                {"name": "spanet2", "label": "Mixing κ SPANet2", "threshold": 0.9},
                {"name": "min_dr_dnn", "label": "min-ΔR + DNN", "threshold": 0.9},
            ],
            "kappa_grid": {"start": -20, "stop": 25, "step": 1.0},
            "luminosities": [139, 300],
            "sqrt_s_tev": 13,
            "pl_threshold": 3.84,
        }
        raw.update(overrides)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
        return path

    return _write


@pytest.fixture(scope="session")
def st_templates(st_store):
    """Templates of spanet2 and min_dr_dnn (score > 0.9, 10 m_HH bins, 13 TeV generated σ) from the store."""
    from spanet2.stats.config import parse_scan_config
    from spanet2.stats.scan import prepare_templates

    config = parse_scan_config(
        {
            "store": str(st_store),
            "methods": [{"name": "spanet2", "threshold": 0.9}, {"name": "min_dr_dnn", "threshold": 0.9}],
            "kappa_grid": [-1, 0, 1],
            "luminosities": [139],
        }
    )
    return prepare_templates(config)[0]
