"""Pythia 8 configured and run: one Pythia per process, blocks of events with their own seeds, a process pool.

Per event Pythia showers (ISR, FSR, MPI on by default) and hadronises. The showers start at the
event's scale (``SpaceShower/TimeShower:pTmaxMatch = 1``, so ISR stays below m_HH/2 for the signal);
Pythia's own default for colourless hard final states — ISR up to the kinematic limit, a "power shower" —
is available as ``PythiaSettings(power_shower=True)``. The events come back in batches (``nextBatch``)
and go to the extraction (``extraction.py``) and then the detector response (``response.py``).

Parallelism and seeds: events are processed in fixed blocks; block k gets Pythia seed k drawn from the
caller's ``rng`` (``Random:seed``, re-initialised per block), so the result does not depend on the number
of worker processes. One Pythia per process (spawned workers); Python threads must not share Pythia.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import awkward as ak
import numpy as np
import pythia8mc

from spanet2.events.jets import JetEvents
from spanet2.generate.detector import DEFAULT_DETECTOR, DetectorParameters
from spanet2.generate.partons import PartonEvents
from spanet2.generate.pythia.extraction import ShoweredBlock, _extract, _extract_empty, _showered_truth
from spanet2.generate.pythia.records import _PartonFeed, _records
from spanet2.generate.pythia.response import _detector_response

__all__ = [
    "PythiaError",
    "PythiaSettings",
    "DEFAULT_PYTHIA",
    "pythia_data_dir",
    "shower_block",
    "pythia_shower",
    "pythia_detector",
]

logger = logging.getLogger(__name__)

_SEED_MAX = 900_000_000  # Pythia's Random:seed range


class PythiaError(RuntimeError):
    """Pythia refused a setting, failed to initialise, or could not be found."""


@dataclass(frozen=True)
class PythiaSettings:
    """Options of the Pythia back end: the shower's (this module) and the extraction's cuts (``extraction.py``).

    The defaults are the ones the package's module docstrings describe.
    """

    mpi: bool = True
    power_shower: bool = (
        False  # True: Pythia's default for colourless final states (ISR up to the kinematic limit)
    )
    extra_settings: tuple[str, ...] = ()  # further `readString` lines, e.g. ("Tune:pp = 14",)
    block_size: int = 200  # events per Pythia seed; fixes the result independently of the worker count
    particle_max_eta: float = 5.0
    jet_cluster_min_pt: float = 10.0  # before smearing; the final cut (detector params) comes after
    hadron_min_pt: float = 5.0
    flavour_dr: float = 0.4
    lepton_min_pt: float = 10.0
    lepton_max_eta: float = 2.5
    isolation_dr: float = 0.3
    electron_isolation: float = 0.12
    muon_isolation: float = 0.25
    max_failures: float = 0.05  # fraction of events Pythia may fail (kept as events without jets)
    env: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


DEFAULT_PYTHIA = PythiaSettings()


def _has_index(path: str | os.PathLike) -> bool:
    return (Path(path) / "Index.xml").is_file()


def pythia_data_dir() -> str:
    """The Pythia xmldoc directory to use; sets PYTHIA8DATA when unset or wrong.

    Pythia reads PYTHIA8DATA before its constructor argument and a wrong value makes ``init()`` fail
    silently, so a wrong value is replaced by the wheel's own ``share/Pythia8/xmldoc`` (with a warning).
    """
    current = os.environ.get("PYTHIA8DATA", "")
    if current and _has_index(current):
        return current
    candidates = [
        Path(pythia8mc.__file__).resolve().parent.parent.parent.parent / "share" / "Pythia8" / "xmldoc"
    ]
    candidates += [
        Path(sys.prefix) / "share" / "Pythia8" / "xmldoc",
        Path(sys.base_prefix) / "share" / "Pythia8" / "xmldoc",
    ]
    for cand in candidates:
        if _has_index(cand):
            if current:
                logger.warning("PYTHIA8DATA=%s has no Index.xml; using %s", current, cand)
            os.environ["PYTHIA8DATA"] = str(cand)
            return str(cand)
    raise PythiaError(f"cannot find Pythia's xmldoc directory (PYTHIA8DATA={current!r}, tried {candidates})")


_STATE: dict[str, object] = {}  # this process's Pythia: its (√s, settings) key, the Pythia and its feed


def _pythia(sqrt_s_tev: float, settings: PythiaSettings):
    """The process's Pythia instance for (√s, settings), created (and initialised) on first use."""
    key = (float(sqrt_s_tev), settings)
    if _STATE.get("key") == key:
        return _STATE["pythia"], _STATE["feed"]
    for name in ("key", "pythia", "feed"):
        _STATE.pop(name, None)
    for name, value in settings.env.items():
        os.environ[name] = value
    xmldir = pythia_data_dir()
    feed = _PartonFeed(500.0 * float(sqrt_s_tev))
    pythia = pythia8mc.Pythia(xmldir, False)
    lines = [
        "Print:quiet = on",
        "Next:numberCount = 0",
        "Beams:frameType = 5",
        "Random:setSeed = on",
        "Random:seed = 1",
        f"PartonLevel:MPI = {'on' if settings.mpi else 'off'}",
        f"SpaceShower:pTmaxMatch = {0 if settings.power_shower else 1}",
        f"TimeShower:pTmaxMatch = {0 if settings.power_shower else 1}",
        *settings.extra_settings,
    ]
    for line in lines:
        if not pythia.readString(line):
            raise PythiaError(f"Pythia rejected the setting {line!r}")
    if not pythia.setLHAupPtr(feed):
        raise PythiaError("Pythia rejected the parton-event feed (setLHAupPtr)")
    if not pythia.init():
        raise PythiaError(
            f"Pythia init() failed (PYTHIA8DATA={os.environ.get('PYTHIA8DATA')!r}, settings {list(lines)})"
        )
    _STATE.update(key=key, pythia=pythia, feed=feed)  # the feed must stay referenced while Pythia lives
    return pythia, feed


_BLOCK_FIELDS = (
    "jet_p4",
    "jet_mask",
    "flavour",
    "nu_px",
    "nu_py",
    "n_electrons",
    "n_muons",
    "failed",
    "higgs_b",
    "higgs",
)


def _scatter(block: ShoweredBlock, rows: np.ndarray, n_events: int) -> ShoweredBlock:
    """Place the events that came back (at `rows` of the block) into a block of n_events (others failed)."""
    width = block.jet_p4.shape[1]
    out = ShoweredBlock(
        np.zeros((n_events, width, 4)),
        np.zeros((n_events, width), bool),
        np.zeros((n_events, width), np.int8),
        np.zeros(n_events),
        np.zeros(n_events),
        np.zeros(n_events, np.int16),
        np.zeros(n_events, np.int16),
        np.ones(n_events, bool),
        np.full((n_events, 4, 4), np.nan),
        np.full((n_events, 2, 4), np.nan),
    )
    for name in _BLOCK_FIELDS:
        getattr(out, name)[rows] = getattr(block, name)
    return out


def shower_block(
    partons: PartonEvents, seed: int, settings: PythiaSettings = DEFAULT_PYTHIA, jet_radius: float = 0.4
) -> ShoweredBlock:
    """Shower, hadronise and cluster one block of parton events with Pythia seed `seed` (this process's Pythia).

    Returns a ShoweredBlock with one row per input event (events Pythia failed on have no jets).
    """
    n = len(partons)
    records = _records(partons)
    pythia, feed = _pythia(partons.sqrt_s_tev, settings)
    pythia.rndm.init(int(seed))
    feed.load(records.rows())
    got = []
    x1_all = []
    while feed.position < n:
        batch = pythia.nextBatch(n - feed.position, "skip")
        if len(batch):
            got.append(batch)
            x1_all.append(ak.to_numpy(batch.info.x1))
    events = ak.concatenate(got) if got else None
    x1_back = np.concatenate(x1_all) if x1_all else np.zeros(0)
    # Which input rows came back: events are consumed in order and x1 passes through unchanged.
    rows = np.full(len(x1_back), -1, dtype=np.int64)
    j = 0
    for i, x in enumerate(x1_back.tolist()):  # per returned event, O(1) each
        while j < n and not math.isclose(records.x1[j], x, rel_tol=1e-9, abs_tol=1e-12):
            j += 1
        if j == n:
            raise PythiaError("could not align Pythia's events with the input events")
        rows[i] = j
        j += 1
    n_failed = n - len(rows)
    if n_failed > settings.max_failures * max(n, 1) + 1:
        raise PythiaError(
            f"Pythia failed on {n_failed} of {n} events (more than {settings.max_failures:.0%})"
        )
    if n_failed:
        logger.warning("Pythia failed on %d of %d events; they are kept without jets", n_failed, n)
    if events is None:
        return _scatter(_extract_empty(), np.zeros(0, dtype=np.int64), n)
    block = _extract(events, len(rows), settings, jet_radius)
    return block if n_failed == 0 else _scatter(block, rows, n)


def _run_block(args: tuple[PartonEvents, int, PythiaSettings, float]) -> ShoweredBlock:
    partons, seed, settings, radius = args
    return shower_block(partons, seed, settings, radius)


def _merge_blocks(blocks: Sequence[ShoweredBlock]) -> ShoweredBlock:
    width = max(b.jet_p4.shape[1] for b in blocks)

    def widen(a: np.ndarray, fill) -> np.ndarray:
        pad = [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, pad, constant_values=fill)

    return ShoweredBlock(
        np.concatenate([widen(b.jet_p4, 0.0) for b in blocks]),
        np.concatenate([widen(b.jet_mask, False) for b in blocks]),
        np.concatenate([widen(b.flavour, 0) for b in blocks]),
        *(
            np.concatenate([getattr(b, name) for b in blocks])
            for name in ("nu_px", "nu_py", "n_electrons", "n_muons", "failed", "higgs_b", "higgs")
        ),
    )


def pythia_shower(
    partons: PartonEvents,
    rng: np.random.Generator,
    *,
    workers: int = 1,
    settings: PythiaSettings = DEFAULT_PYTHIA,
    params: DetectorParameters = DEFAULT_DETECTOR,
    progress: Callable[[int], None] | None = None,
) -> tuple[JetEvents, PartonEvents]:
    """Pythia 8 shower + hadronisation + anti-kT jets; returns (jets, partons with the showered truth quarks).

    partons: N events, signal and/or background (``partons.process``); rng: the caller's generator
    (draws one Pythia seed per block of ``settings.block_size`` events, then the smearing and tagging);
    workers: spawned processes each holding one Pythia (the result does not depend on it).
    Returns JetEvents (N, J) pT-ordered with padding (mask False), and a copy of `partons` whose signal
    ``b`` (N, 4, 4) and ``higgs`` (N, 2, 4) are the H → b b̄ quarks of Pythia's event record: ISR gives
    the Higgs pair a transverse recoil, so these — not the input partons — are what the jets are matched
    to (as in a Delphes file's Particle branch).
    """
    n = len(partons)
    block_size = max(int(settings.block_size), 1)
    n_blocks = max(math.ceil(n / block_size), 1) if n else 0
    seeds = rng.integers(1, _SEED_MAX, size=n_blocks)
    tasks = [
        (
            partons.take(np.arange(k * block_size, min((k + 1) * block_size, n))),
            int(seeds[k]),
            settings,
            float(params.jet_radius),
        )
        for k in range(n_blocks)
    ]
    blocks: list[ShoweredBlock] = []
    if n_blocks == 0:
        blocks = [_extract_empty()]
    elif workers <= 1 or n_blocks == 1:
        for task in tasks:
            blocks.append(_run_block(task))
            if progress:
                progress(len(task[0]))
    else:
        env = {"PYTHIA8DATA": pythia_data_dir()}
        tasks = [(t[0], t[1], _with_env(t[2], env), t[3]) for t in tasks]
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, n_blocks), mp_context=ctx) as pool:
            for task, block in zip(tasks, pool.map(_run_block, tasks), strict=True):
                blocks.append(block)
                if progress:
                    progress(len(task[0]))
    merged = _merge_blocks(blocks)
    if merged.failed.any():
        logger.warning("pythia back end: %d of %d events failed in Pythia", int(merged.failed.sum()), n)
    return _detector_response(merged, rng, params), _showered_truth(partons, merged)


def pythia_detector(
    partons: PartonEvents,
    rng: np.random.Generator,
    *,
    workers: int = 1,
    settings: PythiaSettings = DEFAULT_PYTHIA,
    params: DetectorParameters = DEFAULT_DETECTOR,
    progress: Callable[[int], None] | None = None,
) -> JetEvents:
    """The ``fast_detector`` drop-in: :func:`pythia_shower`'s jets; updates ``partons.b`` / ``.higgs`` in place.

    The in-place update (the showered H → b b̄ quarks, see :func:`pythia_shower`) lets a caller that runs
    ``finalize_events(jets, partons, ...)`` next match the jets to the quarks Pythia actually showered.
    """
    jets, showered = pythia_shower(
        partons, rng, workers=workers, settings=settings, params=params, progress=progress
    )
    partons.b = showered.b
    partons.higgs = showered.higgs
    return jets


def _with_env(settings: PythiaSettings, env: dict[str, str]) -> PythiaSettings:
    return replace(settings, env=dict(env))
