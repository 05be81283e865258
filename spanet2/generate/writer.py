"""Produce the study's HDF5 files: parton generation → detector → four-tag selection, in seeded chunks.

Reproducibility: a sample is made of fixed-size chunks of parton events; chunk k draws its random
numbers from the k-th child of ``np.random.SeedSequence([seed, stream])``, and chunks are used in
order until enough events pass the four-tag cut, so a seed gives the same file for any worker count.

Resume: every finished sample (one κλ point, or the background) is kept under a hidden ``.partial``
folder next to the output until all files are written; a rerun with the same options picks them up.

Weights: every chunk's parton weights sum to the sample's σ (× BR, × generator-cut
efficiency); a file built from the first N_used generated events rescales them by n_chunk / N_used,
so Σ weight over the file = σ × selection efficiency. A file mixing K κλ points divides weights and
kappa_terms by K; a sample split into train/test is rescaled so each file alone represents the full σ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.atomic import check_writable
from spanet2.errors import InputError
from spanet2.events.hdf5 import list_datasets, open_hdf5, write_datasets
from spanet2.events.layout import KAPPA_TERMS_PATH, TRUTH_PROCESS_PATH, WEIGHT_PATH
from spanet2.generate.partons import PartonEvents
from spanet2.generate.selection import finalize_events, four_tag_mask
from spanet2.provenance import provenance

__all__ = [
    "STUDY_KAPPAS",
    "BACKGROUND_MODELS",
    "check_background_model",
    "SampleResult",
    "parse_kappa_list",
    "produce_sample",
    "generate_signal_file",
    "generate_background_file",
    "generate_sets",
]

logger = logging.getLogger(__name__)

STUDY_KAPPAS = (-5.0, -3.0, -1.0, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0, 12.0)
SIGNAL_CHUNK = 20_000  # parton events per chunk (signal: ~8 % pass the four-tag cut)
BACKGROUND_CHUNK = 20_000  # (background: ~0.7 % pass)
EXACT_TRIAL_CHUNK = 400_000  # phase-space trials per chunk of the exact background (fast detector)
SHOWERS = ("fast", "pythia")
BACKGROUND_MODELS = ("exact", "approx")  # exact LO 2 → 4 (pyAmpliCol, the default); the collinear approximation
_MAX_EMPTY_CHUNKS = 20  # give up when this many chunks in a row select nothing
_STREAM_SIGNAL, _STREAM_BACKGROUND = 1, 2


def parse_kappa_list(text: str | Sequence[float], *, flag: str = "--kappa") -> tuple[float, ...]:
    """'-5,-3,1' -> (-5.0, -3.0, 1.0); InputError for an empty list or a non-numeric/non-finite entry."""
    if isinstance(text, str):
        items = [t.strip() for t in text.split(",") if t.strip()]
    else:
        items = list(text)
    if not items:
        raise InputError(flag, None, "expected a comma-separated list of κλ values, got an empty list")
    values = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise InputError(flag, None, f"expected numbers, got {item!r}") from None
        if not np.isfinite(value):
            raise InputError(flag, None, f"expected finite numbers, got {item!r}")
        values.append(value)
    return tuple(values)


def _check_count(value: int, flag: str, *, allow_zero: bool = False) -> int:
    if int(value) != value or value < 0 or (value == 0 and not allow_zero):
        raise InputError(
            flag, None, f"expected a {'non-negative' if allow_zero else 'positive'} event count, got {value}"
        )
    return int(value)


def _check_energy(sqrt_s_tev: float) -> float:
    if not np.isfinite(sqrt_s_tev) or not 1.0 <= sqrt_s_tev <= 100.0:
        raise InputError(
            "--sqrt-s", None, f"expected a collider energy in TeV between 1 and 100, got {sqrt_s_tev}"
        )
    return float(sqrt_s_tev)


def _detector(shower: str) -> Callable[[PartonEvents, np.random.Generator], Any]:
    if shower == "fast":
        from spanet2.generate.detector import fast_detector

        return fast_detector
    if shower == "pythia":
        try:
            from spanet2.generate.pythia_backend import pythia_detector
        except ImportError as exc:
            raise InputError(
                "--shower",
                None,
                f"the pythia back end needs the [pythia] extra (pip install '.[pythia]'): {exc}",
            ) from None

        def run(partons: PartonEvents, rng: np.random.Generator):
            return pythia_detector(partons, rng, workers=1)

        return run
    raise InputError("--shower", None, f"expected one of {', '.join(SHOWERS)}, got {shower!r}")


def check_background_model(model: str) -> str:
    """`model` if it is one of BACKGROUND_MODELS and usable here (exact: pyAmpliCol installed), else InputError."""
    if model not in BACKGROUND_MODELS:
        raise InputError(
            "--background-model", None, f"expected one of {', '.join(BACKGROUND_MODELS)}, got {model!r}"
        )
    if model == "exact":
        from spanet2.generate.tree_me import require_pyamplicol

        require_pyamplicol()
    return model


def _background_info(model: str, sqrt_s_tev: float, shower: str) -> dict[str, Any]:
    """What the background generator's σ after its generator cuts is, with its MC error (fb)."""
    if model == "exact":
        from dataclasses import asdict

        from spanet2.generate.exact_background import DEFAULT_CUTS, survey

        s = survey(float(sqrt_s_tev))  # computed (or loaded) once here, before any worker starts
        if shower == "fast":
            survey(float(sqrt_s_tev), select="four_tag")  # the grid of the detector-first path
        return {
            "background_model": model,
            "sigma_generator_cuts_fb": s.sigma_fb,
            "sigma_generator_cuts_err_fb": s.sigma_err_fb,
            "generator_cuts": asdict(DEFAULT_CUTS),
            "unweighting_efficiency": s.efficiency,
        }
    from spanet2.generate.background import GEN_MAX_ETA, GEN_MIN_PT, background_cross_section

    return {
        "background_model": model,
        "sigma_generator_cuts_fb": background_cross_section(float(sqrt_s_tev)),
        "sigma_generator_cuts_err_fb": None,  # a fixed normalisation, not a computation
        "generator_cuts": {"min_pt": GEN_MIN_PT, "max_eta": GEN_MAX_ETA, "min_dr": 0.0},
    }


@dataclass(frozen=True)
class _ChunkTask:
    process: str  # "signal" | "background"
    kappa: float  # generated κλ (signal)
    kappa_inputs: tuple[float, ...]  # background: κλ inputs drawn from this list
    sqrt_s_tev: float
    n_partons: int
    seed: np.random.SeedSequence
    shower: str
    max_jets: int
    background_model: str = "exact"


def _run_chunk(task: _ChunkTask) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One chunk: partons → detector → selection. Returns (passing events, their index in the chunk)."""
    rng = np.random.default_rng(task.seed)
    if task.process == "background" and task.background_model == "exact" and task.shower == "fast":
        return _run_exact_chunk(task, rng)
    if task.process == "signal":
        from spanet2.generate.signal import generate_signal_partons

        partons = generate_signal_partons(
            task.n_partons, kappa=task.kappa, sqrt_s_tev=task.sqrt_s_tev, rng=rng
        )
        kappa_input = np.full(len(partons), task.kappa)
    else:
        if task.background_model == "exact":
            from spanet2.generate.exact_background import generate_exact_background_partons as make
        else:
            from spanet2.generate.background import generate_background_partons as make

        partons = make(task.n_partons, sqrt_s_tev=task.sqrt_s_tev, rng=rng)
        kappa_input = rng.choice(np.asarray(task.kappa_inputs, dtype=np.float64), size=len(partons))
    jets = _detector(task.shower)(partons, rng)
    passed_index = np.flatnonzero(four_tag_mask(jets))
    events = finalize_events(jets, partons, kappa_input=kappa_input, max_jets=task.max_jets, rng=rng)
    return events, passed_index


def _run_exact_chunk(task: _ChunkTask, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The exact background with the fast detector: `n_partons` phase-space trials, the detector and the
    four-tag cut before the matrix element (exact_background.generate_selected_background); the
    passing events' index is their trial index, so the writer's weight bookkeeping is unchanged."""
    from spanet2.generate.detector import fast_detector
    from spanet2.generate.exact_background import four_tag_selection, generate_selected_background

    events, index = [], []
    for partons, jets, trial in generate_selected_background(
        task.n_partons, sqrt_s_tev=task.sqrt_s_tev, rng=rng, detector=fast_detector, select=four_tag_selection
    ):
        kappa_input = rng.choice(np.asarray(task.kappa_inputs, dtype=np.float64), size=len(partons))
        events.append(finalize_events(jets, partons, kappa_input=kappa_input, max_jets=task.max_jets, rng=rng))
        index.append(trial)
    return {k: np.concatenate([e[k] for e in events]) for k in events[0]}, np.concatenate(index)


@dataclass
class SampleResult:
    """Selected events of one sample (exactly the requested count) and its bookkeeping."""

    events: dict[str, np.ndarray]
    n_generated: int  # parton events used (generator level)
    n_chunks: int
    sigma_fb: float  # Σ weight = σ × efficiency (fb)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return len(self.events[TRUTH_PROCESS_PATH])


def _ordered_results(tasks: Iterator[_ChunkTask], workers: int) -> Iterator[tuple[dict, np.ndarray]]:
    """Run tasks (lazily produced) with `workers` spawn processes, yielding results in task order."""
    if workers <= 1:
        for task in tasks:
            yield _run_chunk(task)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = []
        try:
            for _ in range(workers + 1):
                pending.append(pool.submit(_run_chunk, next(tasks)))
            while pending:
                result = pending.pop(0).result()
                pending.append(pool.submit(_run_chunk, next(tasks)))
                yield result
        finally:  # speculative chunks not needed any more
            for future in pending:
                future.cancel()


def produce_sample(
    process: str,
    n_events: int,
    *,
    sqrt_s_tev: float,
    seed: int,
    kappa: float = 1.0,
    kappa_inputs: Sequence[float] = STUDY_KAPPAS,
    shower: str = "fast",
    workers: int = 1,
    max_jets: int = 10,
    chunk_size: int | None = None,
    stream: int = 0,
    progress: Callable[[int], None] | None = None,
    background_model: str = "exact",
) -> SampleResult:
    """Generate chunks until `n_events` events pass the four-tag cut; keep exactly the first n_events.

    process: "signal" (at κλ = `kappa`) or "background" (κλ input drawn from `kappa_inputs`, parton events
    from `background_model`). Weights are rescaled so Σ weight = σ × (selection efficiency) over the generated events used.
    `progress(n_new_selected)` is called after every chunk.
    """
    if process not in ("signal", "background"):
        raise InputError("process", None, f"expected 'signal' or 'background', got {process!r}")
    _detector(shower)  # fail early on a missing back end
    background_info = {}
    if process == "background":
        check_background_model(background_model)
        background_info = _background_info(background_model, sqrt_s_tev, shower)
    if workers < 1:
        raise InputError("--workers", None, f"expected at least 1 worker, got {workers}")
    if max_jets < 4:
        raise InputError("--max-jets", None, f"expected at least 4 jets per event, got {max_jets}")
    exact_trials = process == "background" and background_model == "exact" and shower == "fast"
    if chunk_size is None:  # a function of the request only (never of the worker count): reproducible
        per_event = 25 if process == "signal" else 200  # ≈ 1 / (four-tag pass rate) with a margin
        chunk_size = int(
            np.clip(n_events * per_event, 2_000, SIGNAL_CHUNK if process == "signal" else BACKGROUND_CHUNK)
        )
        if exact_trials:  # phase-space trials, not events: ≈ 2,000 trials per four-tag event
            chunk_size = int(np.clip(n_events * 3_000, 50_000, EXACT_TRIAL_CHUNK))
    chunk = chunk_size
    tag = _STREAM_SIGNAL if process == "signal" else _STREAM_BACKGROUND
    kappa_key = int(round((kappa + 1000.0) * 1000)) if process == "signal" else 0
    root = np.random.SeedSequence([int(seed), tag, kappa_key, int(stream)])

    def tasks() -> Iterator[_ChunkTask]:
        while True:
            yield _ChunkTask(
                process,
                float(kappa),
                tuple(float(k) for k in kappa_inputs),
                float(sqrt_s_tev),
                chunk,
                root.spawn(1)[0],
                shower,
                max_jets,
                background_model,
            )

    parts: list[dict[str, np.ndarray]] = []
    n_have = 0
    n_chunks = 0
    n_used_generated = 0
    if n_events > 0:
        results = _ordered_results(tasks(), workers)
        try:
            for events, index in results:
                n_chunks += 1
                need = n_events - n_have
                m = len(index)
                if m >= need:
                    events = {k: v[:need] for k, v in events.items()}
                    used = int(index[need - 1]) + 1 if need > 0 else 0
                    n_used_generated += used
                    parts.append(events)
                    n_have += need
                    if progress:
                        progress(need)
                    break
                n_used_generated += chunk
                parts.append(events)
                n_have += m
                if progress:
                    progress(m)
                if n_have == 0 and n_chunks >= _MAX_EMPTY_CHUNKS:
                    raise InputError(
                        "--sqrt-s",
                        None,
                        f"no {process} event passed the four-tag cut in {n_used_generated} generated events "
                        f"at √s = {sqrt_s_tev} TeV; expected a collider energy where the process is produced",
                    )
        finally:
            results.close()
    if parts:
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        scale = chunk / max(n_used_generated, 1)
        merged[WEIGHT_PATH] = merged[WEIGHT_PATH] * scale
        merged[KAPPA_TERMS_PATH] = merged[KAPPA_TERMS_PATH] * scale
    else:
        merged = {}
    sigma = float(merged[WEIGHT_PATH].sum()) if merged else 0.0
    logger.info(
        "%s: %d events selected from %d generated (%d chunks), σ×eff = %.4g fb",
        process,
        n_have,
        n_used_generated,
        n_chunks,
        sigma,
    )
    return SampleResult(
        merged,
        n_used_generated,
        n_chunks,
        sigma,
        {
            "process": process,
            "kappa": kappa if process == "signal" else None,
            "efficiency": _efficiency(n_have, n_used_generated, sigma, background_info, exact_trials),
            **background_info,
        },
    )


def _efficiency(n_have, n_generated, sigma, background_info, exact_trials) -> float:
    """The four-tag pass rate: selected / generated parton events, or σ_selected / σ_generator-cuts where
    the exact background counts phase-space trials (weighted), not unweighted parton events."""
    if exact_trials:
        total = background_info.get("sigma_generator_cuts_fb") or 0.0
        return sigma / total if total > 0 else 0.0
    return n_have / n_generated if n_generated else 0.0


def _cached_sample(
    cache_dir: Path | None,
    key: dict[str, Any],
    make: Callable[[], SampleResult],
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """`make()` once per option set: a finished sample is stored in `cache_dir` and reused on a rerun."""
    if cache_dir is None:
        return make()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir / f"{key['process']}_{digest}.h5"
    if path.exists():
        try:
            with open_hdf5(path) as h5:
                events = {name: ds[()] for name, ds in list_datasets(h5).items()}
                meta = json.loads(h5.attrs["sample"])
            result = SampleResult(
                events, meta["n_generated"], meta["n_chunks"], meta["sigma_fb"], meta["info"]
            )
            logger.info("resumed %s (%d events) from %s", key["process"], result.n_events, path)
            if progress:
                progress(result.n_events)
            return result
        except (OSError, KeyError, ValueError, InputError):
            logger.warning("ignoring an unreadable partial sample %s", path)
            path.unlink(missing_ok=True)
    result = make()
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "n_generated": result.n_generated,
        "n_chunks": result.n_chunks,
        "sigma_fb": result.sigma_fb,
        "info": result.info,
    }
    write_datasets(
        path, result.events, attrs={"sample": json.dumps(meta), "key": json.dumps(key, default=str)}
    )
    return result


class _Progress:
    """A rich progress bar over selected events (silent when not on a terminal and disabled)."""

    def __init__(self, total: int, description: str, enabled: bool = True):
        self.enabled = enabled
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self.enabled:
            self._bar.update(self._task, description=text)

    def __call__(self, n: int) -> None:
        if self.enabled:
            self._bar.advance(self._task, n)


def _signal_samples(
    kappas, per_kappa, *, sqrt_s_tev, seed, shower, workers, max_jets, bar, cache_dir: Path | None = None
) -> list[SampleResult]:
    samples = []
    for k in kappas:
        bar.describe(f"signal κλ={k:g}")
        key = {
            "process": "signal",
            "kappa": k,
            "n": per_kappa,
            "sqrt_s_tev": sqrt_s_tev,
            "seed": seed,
            "shower": shower,
            "max_jets": max_jets,
        }
        samples.append(
            _cached_sample(
                cache_dir,
                key,
                lambda k=k: produce_sample(
                    "signal",
                    per_kappa,
                    sqrt_s_tev=sqrt_s_tev,
                    seed=seed,
                    kappa=k,
                    shower=shower,
                    workers=workers,
                    max_jets=max_jets,
                    progress=bar,
                ),
                bar,
            )
        )
    return samples


def _background_sample(
    n, *, kappa_inputs, sqrt_s_tev, seed, shower, workers, max_jets, bar, background_model="exact",
    cache_dir: Path | None = None,
) -> SampleResult:  # fmt: skip
    key = {
        "process": "background",
        "background_model": background_model,
        "n": n,
        "kappa_inputs": list(kappa_inputs),
        "sqrt_s_tev": sqrt_s_tev,
        "seed": seed,
        "shower": shower,
        "max_jets": max_jets,
    }
    return _cached_sample(
        cache_dir,
        key,
        lambda: produce_sample(
            "background",
            n,
            sqrt_s_tev=sqrt_s_tev,
            seed=seed,
            kappa_inputs=kappa_inputs,
            shower=shower,
            workers=workers,
            max_jets=max_jets,
            progress=bar,
            background_model=background_model,
        ),
        bar,
    )


def _partial_dir(output: Path, is_dir: bool) -> Path:
    return output / ".partial" if is_dir else output.parent / f".{output.name}.partial"


def _merge(parts: Sequence[dict[str, np.ndarray]], divide: int) -> dict[str, np.ndarray]:
    """Concatenate event dicts; weights and κλ terms divided by `divide` (the number of samples averaged)."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    merged[WEIGHT_PATH] = merged[WEIGHT_PATH] / divide
    merged[KAPPA_TERMS_PATH] = merged[KAPPA_TERMS_PATH] / divide
    return merged


def _combine(samples: Sequence[SampleResult], divide: int) -> dict[str, np.ndarray]:
    return _merge([s.events for s in samples], divide)


def _take(events: dict[str, np.ndarray], idx: np.ndarray, weight_scale: float = 1.0) -> dict[str, np.ndarray]:
    out = {k: v[idx] for k, v in events.items()}
    out[WEIGHT_PATH] = out[WEIGHT_PATH] * weight_scale
    out[KAPPA_TERMS_PATH] = out[KAPPA_TERMS_PATH] * weight_scale
    return out


def _attrs(options: dict[str, Any], samples: Sequence[SampleResult], events: dict[str, np.ndarray]) -> dict:
    is_sig = events[TRUTH_PROCESS_PATH] == 1
    extra = {}
    if any(s.info.get("process") == "signal" for s in samples):
        from spanet2.generate.signal import generator_sigma_terms

        # σ(κλ) = s0 + κλ s1 + κλ² s2 (fb, before BR) of the generator: the scans' `generated_curve: store`
        extra["sigma_terms_fb"] = list(generator_sigma_terms(float(options["sqrt_s_tev"])))
    return {
        **extra,
        "sqrt_s_tev": float(options["sqrt_s_tev"]),
        "lumi_unit": "fb",
        "seed": int(options["seed"]),
        "shower": options["shower"],
        **({"background_model": options["background_model"]} if "background_model" in options else {}),
        "cross_section_fb": float(events[WEIGHT_PATH].sum()),
        "signal_cross_section_fb": float(events[WEIGHT_PATH][is_sig].sum()),
        "background_cross_section_fb": float(events[WEIGHT_PATH][~is_sig].sum()),
        "samples": json.dumps(
            [
                {
                    **s.info,
                    "n_selected": s.n_events,
                    "n_generated": s.n_generated,
                    "sigma_after_cuts_fb": s.sigma_fb,
                }
                for s in samples
            ]
        ),
        "provenance": json.dumps(provenance(options=options), default=str),
    }


def _write(path: Path, events: dict[str, np.ndarray], attrs: dict) -> None:
    write_datasets(path, events, attrs=attrs)
    logger.info(
        "wrote %s: %d events, Σ weight = %.4g fb",
        path,
        len(events[TRUTH_PROCESS_PATH]),
        float(events[WEIGHT_PATH].sum()),
    )


def _generate_file(
    output: Path,
    what: dict[str, Any],
    how: dict[str, Any],
    total: int,
    show_progress: bool,
    produce: Callable[[_Progress, Path], list[SampleResult]],
) -> dict[str, Any]:
    """The one body of `generate signal` and `generate background`: check the shower and the output, produce
    the samples (resumable from the partial folder beside `output`), merge them with each sample's weights
    divided by their number, write the file and its root attributes; return those attributes.

    what: the command and its sample options; how: sqrt_s_tev, seed, shower, max_jets (recorded after them)."""
    _detector(how["shower"])
    check_writable(output)
    options = {**what, **how}
    partial = _partial_dir(output, is_dir=False)
    with _Progress(total, options["command"], show_progress) as bar:
        samples = produce(bar, partial)
    events = _combine(samples, len(samples))
    attrs = _attrs(options, samples, events)
    _write(output, events, attrs)
    shutil.rmtree(partial, ignore_errors=True)
    return attrs


def generate_signal_file(
    output: str | os.PathLike,
    *,
    kappas: Sequence[float],
    events_per_kappa: int,
    sqrt_s_tev: float,
    seed: int,
    shower: str = "fast",
    workers: int = 1,
    max_jets: int = 10,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write `events_per_kappa` selected signal events per κλ (mixed, in κλ order) to one HDF5 file.

    Returns the root attributes written (cross sections in fb, provenance).
    """
    kappas = parse_kappa_list(kappas)
    events_per_kappa = _check_count(events_per_kappa, "--events-per-kappa")
    sqrt_s_tev = _check_energy(sqrt_s_tev)
    return _generate_file(
        Path(output),
        {"command": "signal", "kappas": list(kappas), "events_per_kappa": events_per_kappa},
        {"sqrt_s_tev": sqrt_s_tev, "seed": seed, "shower": shower, "max_jets": max_jets},
        events_per_kappa * len(kappas),
        show_progress,
        lambda bar, partial: _signal_samples(
            kappas, events_per_kappa, sqrt_s_tev=sqrt_s_tev, seed=seed, shower=shower, workers=workers,
            max_jets=max_jets, bar=bar, cache_dir=partial,
        ),
    )  # fmt: skip


def generate_background_file(
    output: str | os.PathLike,
    *,
    n_events: int,
    sqrt_s_tev: float,
    seed: int,
    kappa_inputs: Sequence[float] = STUDY_KAPPAS,
    shower: str = "fast",
    workers: int = 1,
    max_jets: int = 10,
    show_progress: bool = True,
    background_model: str = "exact",
) -> dict[str, Any]:
    """Write `n_events` selected QCD 4b events (κλ input drawn from `kappa_inputs`) to one HDF5 file.

    background_model: "exact" (LO 2 → 4 matrix elements, needs pyAmpliCol) or "approx" (background.py)."""
    check_background_model(background_model)
    kappa_inputs = parse_kappa_list(kappa_inputs, flag="--kappa-input")
    n_events = _check_count(n_events, "--events")
    sqrt_s_tev = _check_energy(sqrt_s_tev)
    return _generate_file(
        Path(output),
        {"command": "background", "events": n_events, "kappa_inputs": list(kappa_inputs)},
        {"sqrt_s_tev": sqrt_s_tev, "seed": seed, "shower": shower, "max_jets": max_jets,
         "background_model": background_model},
        n_events,
        show_progress,
        lambda bar, partial: [
            _background_sample(
                n_events, kappa_inputs=kappa_inputs, sqrt_s_tev=sqrt_s_tev, seed=seed, shower=shower,
                workers=workers, max_jets=max_jets, bar=bar, background_model=background_model,
                cache_dir=partial,
            )
        ],
    )  # fmt: skip


def generate_sets(
    output_dir: str | os.PathLike,
    *,
    kappas: Sequence[float],
    signal_per_kappa: int,
    n_background: int,
    sqrt_s_tev: float,
    seed: int,
    test_fraction: float = 0.1,
    shower: str = "fast",
    workers: int = 1,
    max_jets: int = 10,
    show_progress: bool = True,
    background_model: str = "exact",
) -> dict[str, dict[str, Any]]:
    """Write the study's four files into `output_dir`.

    assignment_{train,test}.h5: signal only (every κλ point, split per point); classification_{train,test}.h5:
    the same signal events plus background (κλ input drawn from `kappas`), shuffled. About
    `test_fraction` of each sample goes to the test files. Returns {file name: root attributes}.
    """
    kappas = parse_kappa_list(kappas)
    signal_per_kappa = _check_count(signal_per_kappa, "--signal-per-kappa")
    n_background = _check_count(n_background, "--background", allow_zero=True)
    sqrt_s_tev = _check_energy(sqrt_s_tev)
    if not 0.0 < test_fraction < 1.0:
        raise InputError("--test-fraction", None, f"expected a fraction in (0, 1), got {test_fraction}")
    _detector(shower)
    if n_background:
        check_background_model(background_model)
    out = Path(output_dir)
    check_writable(out / "assignment_train.h5")
    options = {
        "command": "sets",
        "kappas": list(kappas),
        "signal_per_kappa": signal_per_kappa,
        "background": n_background,
        "sqrt_s_tev": sqrt_s_tev,
        "seed": seed,
        "shower": shower,
        "test_fraction": test_fraction,
        "max_jets": max_jets,
        "background_model": background_model,
    }
    total = signal_per_kappa * len(kappas) + n_background
    partial = _partial_dir(out, is_dir=True)
    with _Progress(total, "sets", show_progress) as bar:
        common = {"sqrt_s_tev": sqrt_s_tev, "seed": seed, "shower": shower, "workers": workers,
                  "max_jets": max_jets, "bar": bar, "cache_dir": partial}  # fmt: skip
        signal = _signal_samples(kappas, signal_per_kappa, **common)
        background = None
        if n_background:
            bar.describe("background")
            background = _background_sample(
                n_background, kappa_inputs=kappas, background_model=background_model, **common
            )
    split_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 99]))

    def split(sample: SampleResult) -> tuple[dict, dict]:
        n = sample.n_events
        perm = split_rng.permutation(n)
        n_test = int(round(test_fraction * n))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        return (
            _take(sample.events, train_idx, n / max(len(train_idx), 1)),
            _take(sample.events, test_idx, n / max(len(test_idx), 1)),
        )

    sig_train, sig_test = zip(*(split(s) for s in signal), strict=True)
    k = len(kappas)

    files = {"assignment_train.h5": _merge(sig_train, k), "assignment_test.h5": _merge(sig_test, k)}
    bkg_train, bkg_test = split(background) if background is not None else (None, None)
    for name, sig, bkg in (
        ("classification_train.h5", files["assignment_train.h5"], bkg_train),
        ("classification_test.h5", files["assignment_test.h5"], bkg_test),
    ):
        merged = sig if bkg is None else {key: np.concatenate([sig[key], bkg[key]]) for key in sig}
        order = split_rng.permutation(len(merged[TRUTH_PROCESS_PATH]))
        files[name] = {key: v[order] for key, v in merged.items()}
    samples = [*signal, *([background] if background is not None else [])]
    written: dict[str, dict[str, Any]] = {}
    for name, events in files.items():
        attrs = _attrs({**options, "file": name}, samples, events)
        _write(out / name, events, attrs)
        written[name] = attrs
    (out / "sets.json").write_text(
        json.dumps(
            {name: {k2: v for k2, v in a.items() if k2 != "provenance"} for name, a in written.items()},
            indent=2,
        )
        + "\n"
    )
    shutil.rmtree(partial, ignore_errors=True)
    return written
