"""The whole study in one command: generate → train → test → repeats → predict → store → scans → report.

Every stage calls the same library function as its CLI command, writes under the study's output folder and
is skipped when its outputs exist and its inputs (the config keys it reads, the stages it consumes) are
unchanged (`spanet2.report.stages`). `--from STAGE` reruns from a stage.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spanet2.errors import ConfigError
from spanet2.events import layout as L
from spanet2.report.stages import Stage, StageRunner
from spanet2.report.study_config import (
    ModelConfig,
    ScanPoint,
    StudyConfig,
    load_study_config,
    model_kind,
    resolve_path,
)

__all__ = ["STAGES", "StudyContext", "load_study_config", "run_study", "smoke_config", "stage_names", "study_runner"]

log = logging.getLogger(__name__)


# SPANET2_SMOKE_TEST: the most events, epochs and trials a study runs (every stage still runs)
_SMOKE_DATA = {"signal_per_kappa": 50, "background": 300, "kappa5_signal": 150, "energy_compare_events": 1000}
_SMOKE_NETWORK = {"hidden_dim": 32, "num_encoder_layers": 2}  # at most, for the SPANet2 models


def smoke_config(cfg: StudyConfig) -> StudyConfig:
    """`cfg` at smoke-test sizes: data counts capped, one epoch per network (two per DNN) at most 32 wide and 2
    encoder layers deep, two repeats of one epoch (of the DNNs only when there are some), one tune trial, four
    bootstrap replicas in the scans."""
    data = replace(cfg.data, **{k: min(getattr(cfg.data, k), cap) for k, cap in _SMOKE_DATA.items()})
    if data.pairing_test is not None:
        data = replace(data, pairing_test=replace(data.pairing_test, signal_per_kappa=min(
            data.pairing_test.signal_per_kappa, _SMOKE_DATA["signal_per_kappa"])))
    models = {}
    for name, spec in cfg.models.items():
        pairs_jets = model_kind(name).pairs_jets
        overrides = {**spec.overrides, "epochs": 1 if pairs_jets else 2}
        if pairs_jets:
            overrides.update({k: min(int(overrides.get(k, cap)), cap) for k, cap in _SMOKE_NETWORK.items()})
        models[name] = replace(spec, overrides=overrides)
    dnns = tuple(m for m in cfg.repeats.models if not model_kind(m).pairs_jets)
    repeats = replace(cfg.repeats, n=min(cfg.repeats.n, 2), models=dnns or cfg.repeats.models)
    tune = {name: replace(spec, num_samples=1, epochs=1, max_concurrent_trials=1) for name, spec in cfg.tune.items()}
    scans = replace(cfg.scans, bootstrap=min(cfg.scans.bootstrap, 4))
    return cfg.replace(data=data, models=models, repeats=repeats, tune=tune, scans=scans)


# ------------------------------------------------------------------------------------------- context
@dataclass
class StudyContext:
    cfg: StudyConfig
    out: Path
    workers: int
    ray_address: str | None = None
    dask_scheduler: str | None = None

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def path(self, *parts: str) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def rel(self, p: Path) -> str:
        return str(Path(p).resolve().relative_to(self.out.resolve()))

    @property
    def event_file(self) -> Path:
        return self.cfg.data.event_file

    def data(self, name: str) -> Path:
        return self.out / "data" / name

    def run_dir(self, model: str) -> Path:
        record = json.loads((self.out / "stages" / f"train_{model}.json").read_text())
        return self.out / record["outputs"][0]


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ------------------------------------------------------------------------------------------- stages
PAIRING_TEST = "pairing_test.h5"  # data.pairing_test: signal-only test events for the pairing efficiency by κλ


def _stage_generate(ctx: StudyContext) -> dict:
    from spanet2.generate.writer import generate_sets, generate_signal_file

    d = ctx.cfg.data
    out = ctx.out / "data"
    sqrt_s = d.sqrt_s_tev
    test_fraction = d.test_fraction
    sets = generate_sets(out, kappas=list(d.kappa), signal_per_kappa=d.signal_per_kappa,
                         n_background=d.background, sqrt_s_tev=sqrt_s, seed=ctx.seed, workers=ctx.workers,
                         test_fraction=test_fraction, background_model=d.background_model)
    kappa5 = generate_sets(out / "kappa5", kappas=[5.0], signal_per_kappa=d.kappa5_signal, n_background=0,
                           sqrt_s_tev=sqrt_s, seed=ctx.seed + 1, workers=ctx.workers, test_fraction=test_fraction)
    outputs = [f"data/{n}" for n in ("assignment_train.h5", "assignment_test.h5", "classification_train.h5",
                                     "classification_test.h5")] + ["data/kappa5/assignment_train.h5",
                                                                   "data/kappa5/assignment_test.h5"]
    files = sorted(sets) + [f"kappa5/{n}" for n in sorted(kappa5)]
    pairing = d.pairing_test
    if pairing is not None:  # signal-only test events at a few κλ points: cheap, they fix the pairing efficiency's σ
        generate_signal_file(ctx.data(PAIRING_TEST), kappas=list(pairing.kappa),
                             events_per_kappa=pairing.signal_per_kappa, sqrt_s_tev=sqrt_s,
                             seed=ctx.seed + 2, workers=ctx.workers)
        outputs.append(f"data/{PAIRING_TEST}")
        files.append(PAIRING_TEST)
    return {"outputs": outputs, "files": files}


def _stage_energy(ctx: StudyContext) -> dict:
    """Parton-level 13 vs 14 TeV kinematics (Figs. 11–13)."""
    from spanet2.generate.signal import generate_signal_partons
    from spanet2.physics.kinematics import p4_mass, p4_to_ptetaphim
    from spanet2.report.energy_compare import energy_ratio_summary, plot_energy_comparison

    n = ctx.cfg.data.energy_compare_events
    if ctx.cfg.data.background_model == "exact":
        from spanet2.generate.exact_background import generate_exact_background_partons as background_partons
    else:
        from spanet2.generate.background import generate_background_partons as background_partons
    sig, bkg = {}, {}
    for i, sqrt_s in enumerate((13.0, 14.0)):
        rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 1314, i]))
        s = generate_signal_partons(n, kappa=1.0, sqrt_s_tev=sqrt_s, rng=rng)
        higgs = s.higgs if s.higgs is not None else s.b.reshape(-1, 2, 2, 4).sum(axis=2)  # (N, 2, 4)
        hpt = p4_to_ptetaphim(higgs)[0]  # (N, 2)
        sig[sqrt_s] = {"m_hh": p4_mass(higgs.sum(axis=1)), "pt_h": hpt.reshape(-1)}
        b = background_partons(n, sqrt_s_tev=sqrt_s, rng=rng)
        bpt, beta, _, _ = p4_to_ptetaphim(b.b)  # (N, 4)
        order = np.argsort(-bpt, axis=1)
        bpt = np.take_along_axis(bpt, order, axis=1)
        beta = np.take_along_axis(beta, order, axis=1)
        bkg[sqrt_s] = {"m_4b": p4_mass(b.b.sum(axis=1)), "pt_b1": bpt[:, 0], "pt_b2": bpt[:, 1],
                       "eta_b1": beta[:, 0], "eta_b2": beta[:, 1]}
    fig_dir = ctx.out / "figures"
    mhh = np.linspace(250, 1000, 31)
    sig_panels = {"signal m_HH": {"v13": sig[13.0]["m_hh"], "v14": sig[14.0]["m_hh"], "edges": mhh,
                                  "xlabel": "m_HH [GeV]"},
                  "signal pT(H)": {"v13": sig[13.0]["pt_h"], "v14": sig[14.0]["pt_h"],
                                   "edges": np.linspace(0, 500, 26), "xlabel": "pT(H) [GeV]"}}
    bkg_mass = {"background m_4b": {"v13": bkg[13.0]["m_4b"], "v14": bkg[14.0]["m_4b"],
                                    "edges": np.linspace(100, 1000, 31), "xlabel": "m_4b [GeV]"}}
    bkg_b = {f"background {lab}": {"v13": bkg[13.0][k], "v14": bkg[14.0][k], "edges": e, "xlabel": lab}
             for k, lab, e in (("pt_b1", "leading b pT [GeV]", np.linspace(25, 400, 26)),
                               ("eta_b1", "leading b η", np.linspace(-2.5, 2.5, 21)),
                               ("pt_b2", "sub-leading b pT [GeV]", np.linspace(25, 300, 23)),
                               ("eta_b2", "sub-leading b η", np.linspace(-2.5, 2.5, 21)))}
    paths = []
    paths += plot_energy_comparison(sig_panels, fig_dir / "energy_signal", title="gg→HH (κλ = 1), parton level")
    paths += plot_energy_comparison(bkg_mass, fig_dir / "energy_background_m4b", title="QCD 4b, parton level")
    paths += plot_energy_comparison(bkg_b, fig_dir / "energy_background_b", title="QCD 4b, parton level")
    summary = energy_ratio_summary({**sig_panels, **bkg_mass, **bkg_b})
    _write_json(ctx.out / "results" / "energy_compare.json", {"events": n, "mean_abs_ratio_minus_1": summary})
    return {"outputs": [ctx.rel(p) for p in paths] + ["results/energy_compare.json"], "ratio_summary": summary}


def _train_spanet(ctx: StudyContext, model: str, training_file: Path, *, log_dir: Path | None = None,
                  name: str | None = None) -> dict:
    from spanet2.training.trainer import train

    options = _model_options(model, ctx.cfg.models[model])
    log_dir = log_dir or ctx.out / "models"
    name = name or model
    shutil.rmtree(log_dir / name, ignore_errors=True)  # one run per model: version_0
    result = train(options, log_dir=log_dir, name=name, event_file=ctx.event_file, training_file=training_file,
                   validation_file=None, seed=ctx.seed)
    return {"outputs": [ctx.rel(result.run_dir)], "best": result.best_metrics, "epochs": len(result.history),
            "run_dir": result.run_dir}


def _stage_train_spanet2(ctx):
    return _public(_train_spanet(ctx, "spanet2", ctx.data("classification_train.h5")))


def _stage_train_kappa5(ctx):
    return _public(_train_spanet(ctx, "kappa5", ctx.data("kappa5/assignment_train.h5")))


def _stage_train_assignment_off(ctx):
    return _public(_train_spanet(ctx, "assignment_off", ctx.data("classification_train.h5")))


def _public(record: dict) -> dict:
    """A stage record without the in-process extras (run_dir)."""
    return {k: v for k, v in record.items() if k != "run_dir"}


def _spanet_models(ctx) -> list[str]:
    return [m for m in ("spanet2", "kappa5", "assignment_off") if m in ctx.cfg.models]


def _stage_test(ctx: StudyContext) -> dict:
    """Assignment tables (mixing-κλ and κλ = 5 test sets), pairing efficiency by κλ, ACC/AUC."""
    from spanet2.training import metrics as M
    from spanet2.training.trainer import evaluate

    results: dict[str, Any] = {}
    test_sets = _test_sets(ctx)
    for model in _spanet_models(ctx):
        run = ctx.run_dir(model)
        results[model] = {name: evaluate(run, path) for name, path in test_sets.items()}
    # the min-ΔR baseline on the same sets (no training)
    results["min_dr"] = {}
    for name, path in test_sets.items():
        pairing, target, n_jets, kappa = _min_dr_on(path)
        table = M.assignment_table(pairing, target, n_jets)
        by_kappa = M.pairing_by_kappa_with_errors(pairing, target, kappa)
        results["min_dr"][name] = {
            "assignment_table": table.as_dict(),
            "pairing_efficiency_by_kappa": {k: v["efficiency"] for k, v in by_kappa.items()},
            "pairing_by_kappa": by_kappa,
        }
    path = _write_json(ctx.out / "results" / "test.json", results)
    return {"outputs": [ctx.rel(path)]}


def _test_sets(ctx: StudyContext) -> dict[str, Path]:
    """The test files by name: mixing (assignment), kappa5, classification and, when configured, pairing."""
    sets = {"mixing": ctx.data("assignment_test.h5"), "kappa5": ctx.data("kappa5/assignment_test.h5"),
            "classification": ctx.data("classification_test.h5")}
    if ctx.cfg.data.pairing_test is not None:
        sets["pairing"] = ctx.data(PAIRING_TEST)
    return sets


def _min_dr_on(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The min-ΔR pairing of a test file: (pairing (N, 4), target (N, 4), real jets (N,), κλ (N,))."""
    from spanet2.events.hdf5 import read_datasets
    from spanet2.physics.pairing import min_dr_pairing

    jets = {f: L.jet_path(f) for f in L.JET_FEATURES}
    a = read_datasets(path, [*jets.values(), L.JET_MASK_PATH, *L.HH_PAIRING_PATHS, L.KAPPA_INPUT_PATH])
    mask = a[L.JET_MASK_PATH]
    pairing = min_dr_pairing(a[jets["pt"]], a[jets["eta"]], a[jets["phi"]], a[jets["mass"]], a[jets["btag"]] > 0.5,
                             mask)
    target = np.stack([a[n] for n in L.HH_PAIRING_PATHS], axis=1)
    return pairing, target, mask.sum(axis=1), a[L.KAPPA_INPUT_PATH]


def _stage_compare(ctx: StudyContext) -> dict:
    """Paired comparisons on the same test events: SPANet2 vs min-ΔR pairing (per κλ and overall) and the AUCs
    of the classifiers against min-ΔR + DNN (DeLong's paired σ); each says whether it is resolved at 2σ."""
    from spanet2.events.hdf5 import read_datasets
    from spanet2.training import metrics as M
    from spanet2.training.trainer import evaluate
    from spanet2.uncertainty import compare, delong_paired, paired_difference

    sets = _test_sets(ctx)
    pair_file = sets.get("pairing", sets["mixing"])
    ours = evaluate(ctx.run_dir("spanet2"), pair_file, per_event=True)["events"]
    pairing, target, _, kappa = _min_dr_on(pair_file)
    base = M.higgs_correct(pairing, target).all(axis=1)
    two_h = ours["two_higgs"]
    per_kappa = {}
    for k in np.unique(kappa[two_h]):
        sel = two_h & (kappa == k)
        d, sigma = paired_difference(ours["pairing_correct"][sel], base[sel])
        per_kappa[f"{float(k):g}"] = {**compare(d, sigma), "events": int(sel.sum())}
    d, sigma = paired_difference(ours["pairing_correct"][two_h], base[two_h])
    result: dict[str, Any] = {
        "test_file": ctx.rel(pair_file),
        "pairing": {"spanet2_vs_min_dr": {"overall": {**compare(d, sigma), "events": int(two_h.sum())},
                                          "by_kappa": per_kappa}},
        "auc": {},
    }
    labels = read_datasets(ctx.data("classification_test.h5"), [L.SIGNAL_LABEL_PATH])[L.SIGNAL_LABEL_PATH]
    labels = labels.astype(bool)
    reference = ctx.out / "predictions" / "dnn_min_dr_test.h5"
    others = {"spanet2": ("spanet2_test.h5", L.SIGNAL_PROBABILITY_PATH),
              "spanet2_dnn": ("dnn_spanet2_test.h5", L.SIGNAL_LABEL_PATH)}
    ref_scores = _class_one(read_datasets(reference, [L.SIGNAL_LABEL_PATH])[L.SIGNAL_LABEL_PATH])
    for name, (file, key) in others.items():
        path = ctx.out / "predictions" / file
        if not path.is_file():
            continue
        scores = _class_one(read_datasets(path, [key])[key])
        res = delong_paired(labels, scores, ref_scores)
        result["auc"][f"{name}_vs_min_dr_dnn"] = {"auc": res["a"], "reference_auc": res["b"],
                                                  **compare(res["difference"], res["sigma"])}
    path = _write_json(ctx.out / "results" / "compare.json", result)
    return {"outputs": [ctx.rel(path)]}


def _class_one(scores: np.ndarray) -> np.ndarray:
    """Signal probability from (N,) or (N, C) class probabilities."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores[:, min(1, scores.shape[1] - 1)] if scores.ndim == 2 else scores


def _subset_file(src: Path, dst: Path, fraction: float) -> int:
    """Write the first `fraction` of `src`'s events (the study's files are shuffled) with the same layout and
    attributes; returns the number of events kept."""
    import h5py

    from spanet2.atomic import atomic_path

    with h5py.File(src, "r") as f:
        datasets: list[str] = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        n = f[datasets[0]].shape[0]
        keep = max(1, int(n * fraction))
        with atomic_path(dst) as tmp, h5py.File(tmp, "w") as out:
            out.attrs.update(dict(f.attrs))
            for name in datasets:
                ds = out.create_dataset(name, data=f[name][:keep])
                ds.attrs.update(dict(f[name].attrs))
                parent = f[name].parent
                if parent.name != "/":
                    out[parent.name].attrs.update(dict(parent.attrs))
    return keep


def _stage_scaling(ctx: StudyContext) -> dict:
    """Training-set size sweep (`scaling.fractions` of the training set) for SPANet2 and the min-ΔR DNN: AUC ±
    DeLong σ and pairing efficiency ± Wilson σ on the full test sets; the 100 % point is the main training."""
    from spanet2.training.dnn import evaluate_dnn, train_dnn
    from spanet2.training.trainer import evaluate

    fractions = sorted(float(f) for f in ctx.cfg.scaling.fractions)
    models = list(ctx.cfg.scaling.models)
    train_file = ctx.data("classification_train.h5")
    test_file = ctx.data("classification_test.h5")
    pair_file = _test_sets(ctx).get("pairing", ctx.data("assignment_test.h5"))
    full = json.loads((ctx.out / "results" / "test.json").read_text())
    dnn_full = json.loads((ctx.out / "results" / "dnn.json").read_text())
    points: dict[str, list[dict]] = {m: [] for m in models}
    outputs = []
    import h5py

    with h5py.File(train_file, "r") as f:
        n_train = int(f[L.JET_MASK_PATH].shape[0])
    for fraction in fractions:
        sub = ctx.path("scaling", f"classification_train_{fraction:g}.h5")
        n = _subset_file(train_file, sub, fraction)
        for model in models:
            name = f"{model}_{fraction:g}"
            if model_kind(model).pairs_jets:
                run = _train_spanet(ctx, model, sub, log_dir=ctx.out / "scaling", name=name)["run_dir"]
                ev = evaluate(run, test_file)
                pair = evaluate(run, pair_file)["assignment_table"]["Total"]
                points[model].append({"fraction": fraction, "training_events": n, "auc": ev["auc"],
                                      "auc_err": ev["auc_err"], "pairing": pair["event_efficiency"],
                                      "pairing_err": pair["event_efficiency_err"]})
                outputs.append(ctx.rel(run))
            else:
                options = _model_options(model, ctx.cfg.models[model])
                shutil.rmtree(ctx.out / "scaling" / name, ignore_errors=True)
                res = train_dnn(options, log_dir=ctx.out / "scaling", name=name, training_file=sub,
                                pairing="min-dr", seed=ctx.seed)
                ev = evaluate_dnn(res.run_dir, test_file, pairing="min-dr")
                points[model].append({"fraction": fraction, "training_events": n, "auc": ev["auc"],
                                      "auc_err": ev["auc_err"]})
                outputs.append(ctx.rel(res.run_dir))
        sub.unlink()
    if "spanet2" in points:
        ev = full["spanet2"]["classification"]
        pair_name = "pairing" if "pairing" in full["spanet2"] else "mixing"
        pair = full["spanet2"][pair_name]["assignment_table"]["Total"]
        points["spanet2"].append({"fraction": 1.0, "training_events": n_train, "auc": ev["auc"],
                                  "auc_err": ev.get("auc_err"), "pairing": pair["event_efficiency"],
                                  "pairing_err": pair.get("event_efficiency_err")})
    if "dnn_min_dr" in points and "dnn_min_dr" in dnn_full:
        ev = dnn_full["dnn_min_dr"]
        points["dnn_min_dr"].append({"fraction": 1.0, "training_events": n_train, "auc": ev["auc"],
                                     "auc_err": ev.get("auc_err")})
    pair_name = "pairing" if "pairing" in full["min_dr"] else "mixing"
    min_dr = full["min_dr"][pair_name]["assignment_table"]["Total"]
    result = {"points": points, "min_dr_pairing": {"efficiency": min_dr["event_efficiency"],
                                                   "err": min_dr.get("event_efficiency_err")}}
    path = _write_json(ctx.out / "results" / "scaling.json", result)
    from spanet2.report.plots import plot_scaling

    figures = plot_scaling(result, ctx.out / "figures" / "scaling")
    return {"outputs": outputs + [ctx.rel(path)] + [ctx.rel(p) for p in figures]}


def _stage_predict(ctx: StudyContext) -> dict:
    """SPANet2 and κ5 predictions (with embedding vectors) on the classification sets."""
    from spanet2.training.predict import predict

    outputs = []
    for model in ("spanet2", "kappa5"):
        if model not in ctx.cfg.models:
            continue
        for split in ("train", "test"):
            out = ctx.path("predictions", f"{model}_{split}.h5")
            predict(ctx.run_dir(model), ctx.data(f"classification_{split}.h5"), out,
                    output_vectors=(split == "test"))
            outputs.append(ctx.rel(out))
    return {"outputs": outputs}


_DNN_PAIRING = {"dnn_min_dr": None, "dnn_spanet2": "spanet2", "dnn_kappa5": "kappa5"}


def _stage_train_dnn(ctx: StudyContext) -> dict:
    from spanet2.training.dnn import evaluate_dnn, predict_dnn, train_dnn

    outputs, metrics = [], {}
    for model, pairing_model in _DNN_PAIRING.items():
        spec = ctx.cfg.models.get(model)
        if spec is None or (pairing_model and pairing_model not in ctx.cfg.models):
            continue
        options = _model_options(model, spec)
        train_pairing = "min-dr" if pairing_model is None else ctx.out / "predictions" / f"{pairing_model}_train.h5"
        test_pairing = "min-dr" if pairing_model is None else ctx.out / "predictions" / f"{pairing_model}_test.h5"
        log_dir = ctx.out / "models"
        shutil.rmtree(log_dir / model, ignore_errors=True)
        result = train_dnn(options, log_dir=log_dir, name=model, training_file=ctx.data("classification_train.h5"),
                           pairing=train_pairing, seed=ctx.seed)
        metrics[model] = evaluate_dnn(result.run_dir, ctx.data("classification_test.h5"), pairing=test_pairing)
        scores = ctx.path("predictions", f"{model}_test.h5")
        predict_dnn(result.run_dir, scores, ctx.data("classification_test.h5"), pairing=test_pairing)
        outputs += [ctx.rel(result.run_dir), ctx.rel(scores)]
    path = _write_json(ctx.out / "results" / "dnn.json", metrics)
    return {"outputs": outputs + [ctx.rel(path)], "metrics": metrics}


def _stage_repeats(ctx: StudyContext) -> dict:
    """Mean ± std over n seeds (Ray) for the models listed under `repeats.models`."""
    from spanet2.hpc.repeat import run_repeats

    rep = ctx.cfg.repeats
    n = rep.n
    outputs, summary = [], {}
    if n <= 0:
        path = _write_json(ctx.out / "results" / "repeats.json", {})
        return {"outputs": [ctx.rel(path)], "skipped": "repeats.n is 0"}
    if rep.epochs is not None:
        log.warning("repeats.epochs is ignored: every repeated model trains for its own epochs (models.<name>)")
    for model in rep.models:
        spec = ctx.cfg.models[model]
        kind = model_kind(model)
        if _DNN_PAIRING.get(model):
            continue  # a DNN on SPANet2 pairings needs per-seed predictions of the test set too: not repeated
        # the stage reruns only when its inputs changed: seeds finished under the old inputs must not be reused
        shutil.rmtree(ctx.out / "repeats" / model, ignore_errors=True)
        options_file = _effective_options_file(ctx, model, spec)
        result = run_repeats(options_file, n=n, log_dir=ctx.out / "repeats", name=model,
                             event_file=str(ctx.event_file) if kind.uses_event_file else None,
                             training_file=str(ctx.data("classification_train.h5")),
                             testing_file=str(ctx.data("classification_test.h5")), seed=ctx.seed,
                             epochs=None,  # the model's own epochs: the overrides are in options_file
                             model=kind.name, pairing="min-dr", address=ctx.ray_address, num_cpus=ctx.workers)
        summary[model] = {**result.summary, "epochs": _max_epochs(options_file)}
    path = _write_json(ctx.out / "results" / "repeats.json", summary)
    outputs.append(ctx.rel(path))
    return {"outputs": outputs}


def _max_epochs(options_file: Path) -> int:
    """The epochs a model trains for at most (early stopping may end it sooner)."""
    return int(json.loads(Path(options_file).read_text())["epochs"])


def _effective_options_file(ctx: StudyContext, model: str, spec: ModelConfig) -> Path:
    """The model's options file with the study config's overrides applied, saved under <out>/repeats/."""
    path = ctx.path("repeats", f"{model}_options.json")
    model_kind(model).save_options(_model_options(model, spec), path)
    return path


def _model_options(model: str, spec: ModelConfig) -> Any:
    """The options of one of the study's models: its options file with the config's overrides applied."""
    options = model_kind(model).load_options(spec.options)
    return options.replace(**spec.overrides) if spec.overrides else options


def _stage_tune(ctx: StudyContext) -> dict:
    from spanet2.hpc.search_space import load_search_config
    from spanet2.hpc.tune import run_search
    from spanet2.training.kinds import get_kind

    outputs = []
    for name, spec in ctx.cfg.tune.items():
        config = load_search_config(spec.config)
        changes = {"num_samples": config.num_samples if spec.num_samples is None else spec.num_samples,
                   "epochs": config.epochs if spec.epochs is None else spec.epochs,
                   "max_concurrent_trials": (min(2, ctx.workers) if spec.max_concurrent_trials is None
                                             else spec.max_concurrent_trials),
                   "training_file": str(ctx.data("classification_train.h5")), "seed": ctx.seed}
        if config.options_file:  # the search config's options file, found like the study's own files
            changes["options_file"] = str(resolve_path(config.options_file))
        if get_kind(config.model).uses_event_file:
            changes["event_file"] = str(ctx.event_file)
        if spec.overrides:  # fixed options for every trial (e.g. a batch size that fits the machine)
            changes["overrides"] = {**config.overrides, **spec.overrides}
        config = config.replace(**changes)
        out = ctx.out / "tune" / name
        shutil.rmtree(out, ignore_errors=True)
        run_search(config, out, address=ctx.ray_address, num_cpus=ctx.workers)
        outputs += [ctx.rel(out / "ranking.md"), ctx.rel(out / "best_options.json")]
    return {"outputs": outputs}


_METHODS = {  # store method name -> (pairing source, score source, label)
    "min_dr_dnn": ("min-dr", "dnn_min_dr", "min-ΔR + DNN"),
    "kappa5_dnn": ("kappa5", "dnn_kappa5", "κ5 SPANet + DNN"),
    "spanet2_dnn": ("spanet2", "dnn_spanet2", "mixing-κλ SPANet2 + DNN"),
    "spanet2": ("spanet2", None, "mixing-κλ SPANet2"),
}


def _available_methods(ctx) -> dict[str, tuple]:
    models = ctx.cfg.models
    out = {}
    for name, (pairing, score, label) in _METHODS.items():
        if pairing != "min-dr" and pairing not in models:
            continue
        if score is not None and score not in models:
            continue
        out[name] = (pairing, score, label)
    return out


def _stage_store(ctx: StudyContext) -> dict:
    from spanet2.report.store_builder import StoreInput, build_store

    methods = []
    for name, (pairing, score, _) in _available_methods(ctx).items():
        pair_src = "min-dr" if pairing == "min-dr" else str(ctx.out / "predictions" / f"{pairing}_test.h5")
        spec = f"{name}={pair_src}"
        if score is not None:
            spec += f":{ctx.out / 'predictions' / f'{score}_test.h5'}"
        methods.append(spec)
    out = ctx.out / "events.zarr"
    sqrt_s = ctx.cfg.data.sqrt_s_tev
    build_store(out, [StoreInput(str(ctx.data("classification_test.h5")))], methods, sqrt_s_tev=sqrt_s,
                overwrite=True)
    # the generator records its σ(κλ) terms in the event files and the store builder carries them; files written
    # before it did (spanet2 < 0.3) get them here, once
    from spanet2.events.store import open_store

    if "sigma_terms_fb" not in open_store(out).sample_attrs("signal"):
        import zarr

        from spanet2.generate.signal import generator_sigma_terms

        zarr.open_group(str(out / "signal"), mode="r+").attrs["sigma_terms_fb"] = list(generator_sigma_terms(sqrt_s))
    return {"outputs": ["events.zarr"], "methods": methods}


def _scan_config(ctx: StudyContext, point: ScanPoint, name: str, *, lumi_scan: tuple[float, ...] | None = None
                 ) -> dict:
    """The scan-config mapping (`spanet2.stats.config`) of one scan point of the study."""
    methods = [{"name": m, "label": label, "threshold": ctx.cfg.scans.threshold}
               for m, (_, _, label) in _available_methods(ctx).items()]
    raw = {
        "store": str(ctx.out / "events.zarr"),
        "output": str(ctx.out / "scans" / name),
        "methods": methods,
        **ctx.cfg.scans.settings(point),  # √s, κλ grid, luminosities, Asimov, PL threshold, bootstrap, selection
        # the generated (LO, 13 TeV) signal is scaled term by term to the LHC HH WG NNLO-FTapprox curve;
        # at 14 TeV that curve is rescaled by the SM 14/13 ratio — the study's method
        "signal": {"sample": "signal", "normalisation": "reference", "reference_curve": "lhchwg_nnlo_13",
                   "generated_curve": "store"},  # the generator's σ(κλ) terms, recorded in the store
        "seed": ctx.seed,
    }
    if "spanet2" in [m["name"] for m in methods]:
        raw["equivalent_luminosity"] = {"reference": "spanet2"}
    if lumi_scan is not None:
        raw["lumi_scan"] = [float(x) for x in lumi_scan]
    return raw


def _stage_scans(ctx: StudyContext) -> dict:
    """κλ intervals by PL and CLs at every configured (√s, L), with equivalent luminosity vs SPANet2."""
    from spanet2.stats.config import parse_scan_config
    from spanet2.stats.scan import format_equivalent_table, format_interval_table, run_scan

    outputs, tables = [], {}
    for point in ctx.cfg.scans.points:
        name = f"{int(point.sqrt_s_tev)}TeV"
        raw = _scan_config(ctx, point, name)
        config = parse_scan_config(raw, path=None)
        result = run_scan(config, scheduler=ctx.dask_scheduler, n_workers=ctx.workers)
        tables[name] = {"intervals": format_interval_table(result),
                        "equivalent": format_equivalent_table(result) if result.equivalent else "",
                        "comparison": _constraint_comparison(result, f"{config.sqrt_s_tev:g} TeV")}
        outputs.append(ctx.rel(Path(config.output) / "results.json"))
    path = _write_json(ctx.out / "results" / "scans.json", tables)
    return {"outputs": outputs + [ctx.rel(path)]}


def _constraint_comparison(result: Any, where: str, *, intervals: bool = True, ours: str = "spanet2",
                           baseline: str = "min_dr_dnn", skip_references: Collection[float] = ()) -> list[dict]:
    """SPANet2 against min-ΔR + DNN: Δκλ(ours) − Δκλ(baseline) ± σ (bootstrap σs in quadrature; smaller is
    better) per L and statistic, and L′ − L ± σ(L′), the luminosity the baseline needs to match SPANet2's Δκλ
    at L (larger is better for SPANet2), except at the reference luminosities `skip_references`. Empty without
    bootstrap replicas."""
    from spanet2.uncertainty import compare

    unc = result.uncertainties
    if not unc or ours not in result.intervals or baseline not in result.intervals:
        return []
    rows = []
    names = {"pl": "PL", "cls": "CLs"}
    # SPANet2's own score, and SPANet2's pairing + DNN (the note's "SPANet + DNN" rows), where scanned
    contenders = [(m, label) for m, label in ((ours, "SPANet2"), (f"{ours}_dnn", "SPANet2 + DNN"))
                  if m in result.intervals] if intervals else []
    for method, label in contenders:
        for lumi, per in sorted(result.intervals[method].items()):
            for stat, iv in per.items():
                other = result.intervals[baseline][lumi][stat]
                sa = unc["intervals"][method][lumi][stat].get("width")
                sb = unc["intervals"][baseline][lumi][stat].get("width")
                if iv.width is None or other.width is None or sa is None or sb is None:
                    continue
                verdict = compare(iv.width - other.width, float(np.hypot(sa, sb)), higher_is_better=False)
                rows.append({"quantity": f"{names[stat]} Δκλ of {label} at {lumi:g} fb⁻¹, {where}", **verdict})
    for lumi, per in sorted((result.equivalent.get(baseline) or {}).items()):
        if lumi in skip_references:
            continue
        for stat, entry in per.items():
            value = entry.get("width")
            err = ((unc.get("equivalent_luminosity") or {}).get(baseline, {}).get(lumi, {}).get(stat, {})
                   .get("width"))  # fmt: skip
            if value is None or err is None:
                continue
            verdict = compare(value - lumi, err)
            rows.append({"quantity": f"{names[stat]} equivalent luminosity L′ − L of min-ΔR + DNN for SPANet2's "
                                     f"Δκλ at {lumi:g} fb⁻¹, {where} (L′ = {value:.0f} fb⁻¹)", **verdict})
    return rows


def _stage_lumi(ctx: StudyContext) -> dict:
    """Δκλ vs L (Fig. 14) at 14 TeV."""
    from spanet2.stats.config import parse_scan_config
    from spanet2.stats.scan import format_equivalent_table, format_interval_table, run_lumi

    scans = ctx.cfg.scans
    raw = _scan_config(ctx, scans.lumi_point, "lumi", lumi_scan=scans.lumi_scan)
    config = parse_scan_config(raw, path=None)
    result = run_lumi(config, scheduler=ctx.dask_scheduler, n_workers=ctx.workers)
    # an equivalent luminosity at a point the scans stage already compared is reported there, once
    compared = {float(lumi) for point in scans.points if float(point.sqrt_s_tev) == float(config.sqrt_s_tev)
                for lumi in point.luminosities}  # fmt: skip
    tables = {"intervals": format_interval_table(result, lumis=list(config.lumi_scan)),
              "equivalent": format_equivalent_table(result) if result.equivalent else "",
              "comparison": _constraint_comparison(result, f"{config.sqrt_s_tev:g} TeV", intervals=False,
                                                   skip_references=compared)}  # fmt: skip
    path = _write_json(ctx.out / "results" / "lumi.json", tables)
    return {"outputs": [ctx.rel(Path(config.output) / "results.json"), ctx.rel(path)]}


def _stage_pca(ctx: StudyContext) -> dict:
    from spanet2.events.hdf5 import read_datasets
    from spanet2.events.store import open_store
    from spanet2.report.pca import embedding_pca, plot_explained_variance, plot_pc_correlations

    vectors = read_datasets(ctx.out / "predictions" / "spanet2_test.h5", [L.embedding_path("EVENT"),
                                                                            L.SIGNAL_PROBABILITY_PATH])
    store = open_store(ctx.out / "events.zarr")
    labels = read_datasets(ctx.data("classification_test.h5"), [L.SIGNAL_LABEL_PATH])[L.SIGNAL_LABEL_PATH]
    # the store holds events split by sample; the predictions file keeps the input order
    feats = np.empty((len(labels), 0))
    names: list[str] = []
    order = {s: np.flatnonzero(labels == (1 if s == "signal" else 0)) for s in ("signal", "background")}
    for sample, idx in order.items():
        if sample not in store.samples:
            continue
        f = store.numpy(sample, "spanet2/features")
        if feats.shape[1] == 0:
            feats = np.zeros((len(labels), f.shape[1]))
            names = list(store.sample_attrs(sample).get("feature_names") or store.attrs.get("feature_names"))
        feats[idx] = f
    ok = np.isfinite(feats).all(axis=1)
    result = embedding_pca(vectors[L.embedding_path("EVENT")][ok], feats[ok], names, labels[ok], seed=ctx.seed)
    paths = plot_explained_variance(result, ctx.out / "figures" / "pca_explained_variance")
    paths += plot_pc_correlations(result, ctx.out / "figures" / "pca_correlations")
    path = _write_json(ctx.out / "results" / "pca.json", {
        "explained_variance_ratio": result.explained_variance_ratio,
        "explained_variance_ratio_err": result.explained_variance_ratio_err, "feature_names": result.feature_names,
        "correlations": {k: v for k, v in result.correlations.items()}, "n_events": result.n_events})
    return {"outputs": [ctx.rel(p) for p in paths] + [ctx.rel(path)]}


def _stage_plots(ctx: StudyContext) -> dict:
    from spanet2.report.plots import plot_all

    paths = plot_all(ctx.out / "events.zarr", ctx.out / "figures")
    return {"outputs": [ctx.rel(p) for p in paths]}


def _stage_report(ctx: StudyContext) -> dict:
    from spanet2.report.study_report import write_report

    paths = write_report(ctx)
    return {"outputs": [ctx.rel(p) for p in paths]}


def _reads_models(*models: str) -> Callable[[StudyConfig], list[Path]]:
    """The files a training stage reads: the named models' options JSON and the event file."""

    def reads(cfg: StudyConfig) -> list[Path]:
        return [cfg.models[m].options for m in models if m in cfg.models] + [cfg.data.event_file]

    return reads


def _reads_repeats(cfg: StudyConfig) -> list[Path]:
    return _reads_models(*cfg.repeats.models)(cfg)


def _reads_tune(cfg: StudyConfig) -> list[Path]:
    """Each search config and the options file it names."""
    files = [cfg.data.event_file]
    for spec in cfg.tune.values():
        files.append(spec.config)
        try:
            options = (yaml.safe_load(spec.config.read_text()) or {}).get("options")
        except (OSError, yaml.YAMLError):
            options = None  # the stage itself reports the broken file
        if isinstance(options, str):
            files.append(resolve_path(options))
    return files


def _reads_event_file(cfg: StudyConfig) -> list[Path]:
    return [cfg.data.event_file]


STAGES: list[Stage] = [
    Stage("generate", _stage_generate, ("seed", "data"), (), "generate the study's event files"),
    Stage("energy_compare", _stage_energy, ("seed", "data.energy_compare_events", "data.background_model"), (),
          "13 vs 14 TeV parton kinematics"),
    Stage("train_spanet2", _stage_train_spanet2, ("seed", "models.spanet2"), ("generate",),
          "train mixing-κλ SPANet2 (assignment + classification)", _reads_models("spanet2")),
    Stage("train_kappa5", _stage_train_kappa5, ("seed", "models.kappa5"), ("generate",),
          "train κ5 SPANet (κλ = 5 signal, assignment)", _reads_models("kappa5")),
    Stage("train_assignment_off", _stage_train_assignment_off, ("seed", "models.assignment_off"), ("generate",),
          "train SPANet2 with the assignment loss off", _reads_models("assignment_off")),
    Stage("test", _stage_test, (), ("generate", "train_spanet2", "train_kappa5", "train_assignment_off"),
          "assignment tables, pairing efficiency by κλ, ACC/AUC", _reads_event_file),
    Stage("predict", _stage_predict, (), ("generate", "train_spanet2", "train_kappa5"),
          "SPANet2 / κ5 predictions with embedding vectors", _reads_event_file),
    Stage("train_dnn", _stage_train_dnn, ("seed", "models.dnn_min_dr", "models.dnn_spanet2", "models.dnn_kappa5"),
          ("generate", "predict"), "DNNs on min-ΔR and SPANet2 pairings",
          _reads_models("dnn_min_dr", "dnn_spanet2", "dnn_kappa5")),
    Stage("compare", _stage_compare, (), ("generate", "train_spanet2", "predict", "train_dnn"),
          "paired comparisons with min-ΔR (+ DNN): difference ± σ, resolved or not", _reads_event_file),
    Stage("scaling", _stage_scaling, ("seed", "scaling", "models.spanet2", "models.dnn_min_dr"),
          ("generate", "test", "train_dnn"), "AUC and pairing vs training-set size",
          _reads_models("spanet2", "dnn_min_dr")),
    Stage("repeats", _stage_repeats, ("seed", "repeats", "models"), ("generate",),
          "repeated trainings (mean ± std), Ray", _reads_repeats),
    Stage("tune", _stage_tune, ("seed", "tune"), ("generate",), "Optuna search through Ray Tune", _reads_tune),
    Stage("store", _stage_store, (), ("generate", "train_dnn", "predict"),
          "the Zarr event store, one column set per method"),
    Stage("scans", _stage_scans, ("scans",), ("store",), "κλ intervals (PL and CLs), Dask"),
    Stage("lumi", _stage_lumi, ("scans",), ("store",), "Δκλ vs luminosity and equivalent luminosity"),
    Stage("pca", _stage_pca, ("seed",), ("generate", "store", "predict"), "PCA of the SPANet2 event vectors"),
    Stage("plots", _stage_plots, (), ("store",), "mass planes, m_HH after selection, pairing efficiency vs κλ"),
    Stage("report", _stage_report, ("report",),
          ("generate", "energy_compare", "test", "train_dnn", "compare", "scaling", "repeats", "tune", "scans",
           "lumi", "pca", "plots"),
          "report.md and report.html"),
]


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def study_runner(out: Path, cfg: StudyConfig) -> StageRunner:
    """The stage runner of a study folder: the stages above, fingerprinted with the spanet2 version (a stage's
    config keys name sections of `cfg`, hashed as their `dataclasses.asdict`)."""
    from spanet2 import __version__

    return StageRunner(out, cfg, STAGES, progress=lambda msg: print(f"study: {msg}", flush=True), version=__version__)


def run_study(config_path: str | Path, *, output: str | Path | None = None, from_stage: str | None = None,
              workers: int | None = None, ray_address: str | None = None,
              dask_scheduler: str | None = None, seed: int | None = None, smoke: bool = False) -> dict:
    """Run (or resume) the study of `config_path`; returns the stage records. `seed` overrides the config's;
    `smoke` (SPANET2_SMOKE_TEST) shrinks it to a few minutes (`smoke_config`)."""
    import os

    cfg = load_study_config(config_path)
    if seed is not None:
        cfg = cfg.replace(seed=int(seed))
    if smoke:
        cfg = smoke_config(cfg)
    if from_stage is not None and from_stage not in stage_names():
        raise ConfigError("--from", from_stage, f"unknown stage; expected one of {', '.join(stage_names())}")
    out = Path(output or cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    ctx = StudyContext(cfg, out, workers or cfg.workers or os.cpu_count() or 1, ray_address, dask_scheduler)
    # the study as run (with a --seed override), so that `spanet2 report DIR` and reruns see the same config
    (out / "study.yaml").write_text(Path(config_path).read_text() if seed is None and not smoke
                                    else yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
    runner = study_runner(out, cfg)
    t0 = time.perf_counter()
    records = runner.run(ctx, from_stage=from_stage)
    print(f"study: finished in {time.perf_counter() - t0:.1f} s; report: {out / 'report.md'}", flush=True)
    return records


def rewrite_report(study_dir: str | Path) -> Path:
    """Regenerate report.md/html of a finished study folder (`spanet2 report DIR`)."""
    import os

    from spanet2.errors import InputError
    from spanet2.report.study_report import write_report

    out = Path(study_dir)
    if not (out / "study.yaml").is_file():
        raise InputError(out, "study.yaml", "not a study output folder (no study.yaml)")
    cfg = load_study_config(out / "study.yaml")
    ctx = StudyContext(cfg, out, cfg.workers or os.cpu_count() or 1)
    return write_report(ctx)[0]
