"""Fresh study stages: a fingerprint covers the content of every file a stage reads and the package version, so
editing an options file reruns exactly the stages that depend on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from spanet2.report.stages import Stage, StageRunner, file_sha256
from spanet2.report.study import STAGES, load_study_config, study_runner

TINY = Path(__file__).with_name("tiny_study.yaml")
ROOT = Path(__file__).resolve().parents[2]


def _recording_stages(tmp_path, calls, options):
    def make(name, consumes=None):
        def run(ctx):
            text = name + ((tmp_path / consumes).read_text() if consumes else "")
            (tmp_path / f"{name}.txt").write_text(text)
            calls.append(name)
            return {"outputs": [f"{name}.txt"]}

        return run

    return [
        Stage("train", make("train"), ("seed",), (), reads=lambda cfg: [options]),
        Stage("predict", make("predict", "train.txt"), (), ("train",)),
        Stage("generate_other", make("generate_other"), ("seed",), ()),
        Stage("report", make("report", "predict.txt"), (), ("predict", "generate_other")),
    ]


def test_editing_an_options_file_reruns_only_the_stages_that_read_it(tmp_path):
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"learning_rate": 0.001}))
    calls: list[str] = []
    stages = _recording_stages(tmp_path, calls, options)
    cfg = {"seed": 1}
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None).run(None)
    assert calls == ["train", "predict", "generate_other", "report"]
    calls.clear()
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None).run(None)
    assert calls == []  # nothing changed
    options.write_text(json.dumps({"learning_rate": 0.002}))
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None).run(None)
    assert calls == ["train", "predict", "report"]  # generate_other reads nothing that changed
    calls.clear()
    # an output edited by hand reruns the stages that consume it
    (tmp_path / "predict.txt").write_text("edited")
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None).run(None)
    assert calls == ["report"]
    calls.clear()
    # a new spanet2 version reruns everything
    StageRunner(tmp_path, cfg, stages, progress=lambda m: None, version="99.0").run(None)
    assert calls == ["train", "predict", "generate_other", "report"]
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == sorted(
        f"{s.name}.json" for s in stages
    )  # one record per stage and nothing else (the report lists them)
    cache = json.loads((tmp_path / ".file_hashes.json").read_text())
    assert cache[str(options.resolve())][2] == file_sha256(options)


def test_study_fingerprints_follow_the_options_and_tune_files(tmp_path, monkeypatch):
    """The real study's stage table: editing the SPANet2 options file changes the fingerprints of train_spanet2
    and everything downstream of it, and of no other stage; editing a tune config changes only tune and report."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    monkeypatch.chdir(tmp_path)  # the configs' relative paths (configs/options/...) now name the copies
    cfg = yaml.safe_load(TINY.read_text())
    cfg["tune"] = {"spanet2": {"config": "configs/tune/spanet2.yaml", "num_samples": 1}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cfg = load_study_config(path)
    out = tmp_path / "out"

    before = study_runner(out, cfg).fingerprints()
    assert set(before) == {s.name for s in STAGES}
    options = configs / "options/spanet2_mixing_kappa.json"
    values = json.loads(options.read_text())
    values["learning_rate"] = 0.5
    options.write_text(json.dumps(values))
    after = study_runner(out, cfg).fingerprints()
    changed = {name for name in before if before[name] != after[name]}
    # tune's search config names this options file too (configs/tune/spanet2.yaml: options: configs/options/...)
    assert changed == {
        "train_spanet2",
        "test",
        "predict",
        "train_dnn",
        "compare",
        "scaling",
        "store",
        "scans",
        "lumi",
        "pca",
        "plots",
        "tune",
        "report",
    }

    tune_config = configs / "tune/spanet2.yaml"
    tune_config.write_text(tune_config.read_text().replace("num_samples: 100", "num_samples: 99"))
    again = study_runner(out, cfg).fingerprints()
    assert {name for name in after if after[name] != again[name]} == {"tune", "report"}

    event_file = configs / "events/hh4b.yaml"
    event_file.write_text(event_file.read_text() + "\n# edited\n")
    last = study_runner(out, cfg).fingerprints()
    untouched = {name for name in again if again[name] == last[name]}
    assert untouched == {"generate", "energy_compare"}  # everything that reads the event file reruns
