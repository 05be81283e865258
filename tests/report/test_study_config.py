"""The typed study config: every shipped config loads, mistakes are one ConfigError naming the file and key (exit
code 2 from the CLI), relative paths fall back to the shipped configs, and stage fingerprints follow the keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from spanet2.bundle import bundle_root
from spanet2.errors import ConfigError
from spanet2.report.study import smoke_config, study_runner
from spanet2.report.study_config import (
    DataConfig,
    ModelConfig,
    ScansConfig,
    StudyConfig,
    load_study_config,
    parse_study_config,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny_study.yaml")
SHIPPED = sorted((ROOT / "configs" / "study").glob("*.yaml"))


def _write(tmp_path: Path, mutate=None, name: str = "study.yaml") -> Path:
    raw = yaml.safe_load(TINY.read_text())
    if mutate is not None:
        mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", [*SHIPPED, TINY], ids=lambda p: p.name)
def test_every_study_config_loads_and_round_trips(path):
    cfg = load_study_config(path)
    assert (
        isinstance(cfg, StudyConfig)
        and isinstance(cfg.data, DataConfig)
        and isinstance(cfg.scans, ScansConfig)
    )
    assert cfg.path == path.resolve()
    assert {"spanet2", "dnn_min_dr"} <= set(cfg.models)
    assert all(isinstance(m, ModelConfig) and m.options.is_file() for m in cfg.models.values())
    assert cfg.data.event_file.is_file() and all(t.config.is_file() for t in cfg.tune.values())
    # the YAML form (what `--seed` writes to study.yaml) reads back to the same config
    again = parse_study_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict(), allow_unicode=True)), path)
    assert again == cfg


def test_shipped_configs_are_found():
    assert {p.name for p in SHIPPED} >= {"demo.yaml", "medium.yaml", "full.yaml"}


def test_values_and_defaults(tmp_path):
    cfg = load_study_config(TINY)
    assert cfg.seed == 3 and cfg.workers == 2 and cfg.output == "runs/tiny"
    assert cfg.data.kappa == (-5, 1, 5) and cfg.data.pairing_test.signal_per_kappa == 400
    assert cfg.models["spanet2"].overrides == {"epochs": 1, "batch_size": 256, "num_encoder_layers": 2}
    assert cfg.scans.points[1].sqrt_s_tev == 14.0 and cfg.scans.points[1].luminosities == (3000,)
    assert cfg.repeats.n == 2 and cfg.repeats.models == ("dnn_min_dr",) and cfg.tune == {}

    def strip(c):
        for key in ("workers", "repeats", "scaling", "tune"):
            c.pop(key)
        for key in ("test_fraction", "pairing_test", "energy_compare_events", "sqrt_s_tev"):
            c["data"].pop(key)
        c["scans"] = {"points": c["scans"]["points"]}

    bare = load_study_config(_write(tmp_path, strip))
    assert bare.workers is None and bare.repeats.n == 0 and bare.scaling.fractions == () and bare.tune == {}
    assert (bare.data.test_fraction, bare.data.pairing_test, bare.data.energy_compare_events) == (
        0.1,
        None,
        20000,
    )
    assert (
        bare.scans.asimov == "background" and bare.scans.bootstrap == 0 and bare.scans.lumi_scan[-1] == 3000
    )


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda c: c.update(sed=1), "sed", "did you mean seed"),
        (lambda c: c["data"].update(kapa=[1]), "data.kapa", "did you mean kappa"),
        (lambda c: c["scans"].update(bootstrapp=3), "scans.bootstrapp", "did you mean bootstrap"),
        (lambda c: c["models"]["spanet2"].update(hidden_dimm=8), "models.spanet2.hidden_dimm", "hidden_dim"),
        (lambda c: c["models"].update(dnn_kapa5={"options": "x.json"}), "models.dnn_kapa5", "dnn_kappa5"),
        (lambda c: c["data"].update(background="many"), "data.background", "positive count"),
        (lambda c: c["data"].update(background=-1), "data.background", "positive count"),
        (
            lambda c: c["data"].update(energy_compare_events=-5),
            "data.energy_compare_events",
            "positive count",
        ),
        (lambda c: c["data"].update(sqrt_s_tev="13"), "data.sqrt_s_tev", "number"),
        (lambda c: c.update(seed=-1), "seed", "integer >= 0"),
        (lambda c: c.update(workers=0), "workers", "positive count"),
        (lambda c: c.update(data=[1, 2]), "data", "mapping"),
        (lambda c: c["scans"].update(bootstrap=1.5), "scans.bootstrap", "integer >= 0"),
        (lambda c: c["scans"].update(bootstrap=1), "scans.bootstrap", ">= 2"),
        (
            lambda c: c["scans"].update(kappa_grid={"start": 0, "stop": 5, "step": -1}),
            "scans.kappa_grid.step",
            "",
        ),
        (lambda c: c["scans"].update(kappa_grid="wide"), "scans.kappa_grid", ""),
        (lambda c: c["scans"].update(asimov="data"), "scans.asimov", "background"),
        (lambda c: c["scans"].update(threshold="worst"), "scans.threshold", "number"),
        (lambda c: c["scans"].update(lumi_scan=[300, -1]), "scans.lumi_scan", "positive"),
        (lambda c: c["scans"].update(lumi_sqrt_s_tev=8), "scans.lumi_sqrt_s_tev", "13 or 14"),
        (
            lambda c: c["scans"]["points"][1].update(luminosities=[300, 300]),
            "scans.points[1].luminosities",
            "repeat",
        ),
        (lambda c: c["scans"].pop("points"), "scans.points", "missing"),
        (lambda c: c["repeats"].update(models=["dnn_kappa5"]), "repeats.models", "subset"),
        (lambda c: c["repeats"].update(n=-2), "repeats.n", "integer >= 0"),
        (
            lambda c: c.update(tune={"s": {"config": "configs/tune/spanet2.yaml", "epochs": 0}}),
            "tune.s.epochs",
            "",
        ),
        (lambda c: c.update(tune={"s": {"num_samples": 2}}), "tune.s.config", "missing"),
        (
            lambda c: c["models"]["dnn_min_dr"].update(options="configs/options/nope.json"),
            "models.dnn_min_dr.options",
            "not found",
        ),
        (lambda c: c.update(tune={"s": {"config": "configs/tune/nope.yaml"}}), "tune.s.config", "not found"),
        (lambda c: c["data"].update(event_file="configs/events/nope.yaml"), "data.event_file", "not found"),
        (
            lambda c: c.update(tune={"/some/abs/dir": {"config": "configs/tune/spanet2.yaml"}}),
            "tune./some/abs/dir",
            "plain name",
        ),
        (lambda c: c.update(tune={"..": {"config": "configs/tune/spanet2.yaml"}}), "tune...", "plain name"),
        (lambda c: c["data"].update(background_model="nlo"), "data.background_model", "exact"),
        (lambda c: c["models"]["spanet2"].update(hidden_dim=0), "models.spanet2.hidden_dim", "positive"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, mutate, key, words):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as info:
        load_study_config(path)
    line = info.value.one_line()
    assert str(path) in line and f"{path}: {key}: " in line and words in line, line
    assert "\n" not in line


def test_bad_config_exit_2_without_traceback(tmp_path, run_cli):
    path = _write(tmp_path, lambda c: c["data"].update(signal_per_kappa=-10))
    rc, stdout, stderr = run_cli("study", path, "--output", tmp_path / "out")
    assert rc == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        f"spanet2: error: {path}: data.signal_per_kappa: expected a positive count, got -10"
    ]
    assert not (tmp_path / "out").exists()  # nothing runs, nothing is written
    rc, _, stderr = run_cli("report", tmp_path)  # not a study folder
    assert rc == 2 and "study.yaml" in stderr


def test_missing_file_names_both_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, lambda c: c["models"]["spanet2"].update(options="configs/options/nope.json"))
    with pytest.raises(ConfigError) as info:
        load_study_config(path)
    assert info.value.key == "models.spanet2.options"
    assert str(Path.cwd()) in info.value.message and str(bundle_root()) in info.value.message


def test_relative_paths_fall_back_to_the_shipped_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert not (tmp_path / "configs").exists()
    path = _write(tmp_path, lambda c: c.update(tune={"s": {"config": "configs/tune/spanet2.yaml"}}))
    cfg = load_study_config(path)
    shipped = bundle_root() / "configs"
    assert cfg.models["spanet2"].options == shipped / "options" / "spanet2_mixing_kappa.json"
    assert cfg.data.event_file == shipped / "events" / "hh4b.yaml"
    assert cfg.tune["s"].config == shipped / "tune" / "spanet2.yaml"
    # a file of the same relative path in the working directory wins (e.g. a folder made by `spanet2 init`)
    mine = tmp_path / "configs" / "options" / "spanet2_mixing_kappa.json"
    mine.parent.mkdir(parents=True)
    shutil.copy(shipped / "options" / "spanet2_mixing_kappa.json", mine)
    cfg = load_study_config(path)
    assert cfg.models["spanet2"].options == Path("configs/options/spanet2_mixing_kappa.json")
    assert cfg.models["kappa5"].options == shipped / "options" / "spanet2_kappa5.json"


def test_fingerprints_are_stable_and_follow_the_keys_read(tmp_path):
    out = tmp_path / "out"
    before = study_runner(out, load_study_config(TINY)).fingerprints()
    assert study_runner(out, load_study_config(TINY)).fingerprints() == before  # stable across loads

    def changed(mutate) -> set[str]:
        after = study_runner(out, load_study_config(_write(tmp_path, mutate))).fingerprints()
        return {name for name in before if before[name] != after[name]}

    assert changed(lambda c: None) == set()  # the same YAML elsewhere: the same fingerprints
    assert changed(lambda c: c["scans"]["points"][0].update(luminosities=[139])) == {
        "scans",
        "lumi",
        "report",
    }
    assert changed(lambda c: c["models"]["dnn_min_dr"].update(epochs=3)) == {
        "train_dnn",
        "compare",
        "scaling",
        "repeats",
        "store",
        "scans",
        "lumi",
        "pca",
        "plots",
        "report",
    }
    assert changed(lambda c: c["data"].update(energy_compare_events=3000)) == set(
        before
    )  # generate reads data
    assert changed(lambda c: c["scans"].update(asimov="background")) == set()  # the value it already had


def test_smoke_config_caps_sizes():
    cfg = load_study_config(TINY)
    cfg = cfg.replace(tune={"s": load_study_config(ROOT / "configs/study/demo.yaml").tune["spanet2"]})
    small = smoke_config(cfg)
    assert (small.data.signal_per_kappa, small.data.background, small.data.kappa5_signal) == (50, 300, 150)
    assert small.data.energy_compare_events == 1000 and small.data.pairing_test.signal_per_kappa == 50
    assert small.models["spanet2"].overrides == {
        "epochs": 1,
        "batch_size": 256,
        "num_encoder_layers": 2,
        "hidden_dim": 32,
    }
    assert small.models["dnn_min_dr"].overrides == {"epochs": 2}
    assert small.repeats.n == 2 and small.repeats.models == ("dnn_min_dr",) and small.scans.bootstrap == 4
    assert (small.tune["s"].num_samples, small.tune["s"].epochs, small.tune["s"].max_concurrent_trials) == (
        1,
        1,
        1,
    )
    assert small.tune["s"].overrides == cfg.tune["s"].overrides
    assert cfg.data.background == 450  # the original is untouched
