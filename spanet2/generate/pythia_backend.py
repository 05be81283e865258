"""Pythia 8 + fastjet detector back end: shower and hadronise our parton events, cluster anti-kT jets.

The parton events (signal gg → HH → bb̄bb̄ or QCD 4b) are handed to Pythia 8 through a Python
``pythia8mc.LHAup`` subclass (``Beams:frameType = 5``):

- signal: g(501,502) g(502,501) → H H (status 2 resonances), H → b(503,0) b̄(0,503) and b(504,0) b̄(0,504):
  the decays are written in. Shower start scale = ``partons.scale`` (μ_F = m_HH/2). ISR gives the Higgs
  pair a transverse recoil, so the truth-matching reference becomes the H → b b̄ quarks of Pythia's event
  record (``pythia_shower`` returns them; ``pythia_detector`` writes them into the caller's ``partons``).
- background: the four b partons are paired into two g* → bb̄ splittings (the pairing with the smallest
  sum of pair masses) with the colour flow of gg → gg (or qq̄ → gg for quark-initiated events), the
  higher-pT parton of a pair taken as the b; start scale = the hard pT.
- incoming partons along ±z carry the final state's E ± p_z, so four-momentum balances exactly.

Per event Pythia showers (ISR, FSR, MPI on by default) and hadronises. The showers start at the
event's scale (``SpaceShower/TimeShower:pTmaxMatch = 1``, so ISR stays below m_HH/2 for the signal);
Pythia's own default for colourless hard final states — ISR up to the kinematic limit, a "power shower" —
is available as ``PythiaSettings(power_shower=True)``. Per batch the events come
back as awkward arrays (``nextBatch``) and everything after that is vectorised:

- jets: anti-kT R = 0.4 (fastjet) on visible final-state particles with |η| < 5 (isolated leptons and
  neutrinos removed); energy smeared with the CMS-card resolution σ_E = √((0.05 E)² + 1.5² E) (same as the
  fast detector); kept with pT > 20 GeV, |η| < 2.5 after smearing.
- truth flavour: b when a last-in-chain B hadron with pT > 5 GeV lies within ΔR < 0.4 of the jet, else c
  for a C hadron, else light; b-tagging with the fast detector's flat model (0.77 / 0.204 / 0.0077).
- MET: the vector sum of neutrino pT plus the jet mismeasurement.
- leptons: final-state e / μ with pT > 10 GeV, |η| < 2.5 and a relative isolation (scalar pT sum of other
  visible particles within ΔR < 0.3, over the lepton pT) below 0.12 (e) / 0.25 (μ), as in the Delphes
  CMS card; no identification efficiency.

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
from dataclasses import dataclass, field
from pathlib import Path

# The [pythia] extra: without it this import fails with ImportError, which the generate CLI reports as
# a one-line user error (`--shower pythia` needs `pip install '.[pythia]'`).
import awkward as ak
import fastjet
import numpy as np
import pythia8mc

from spanet2.events.jets import JetEvents
from spanet2.generate.detector import DEFAULT_DETECTOR, DetectorParameters, apply_btagging
from spanet2.generate.partons import PartonEvents
from spanet2.physics.kinematics import delta_r

__all__ = [
    "PythiaError",
    "PythiaSettings",
    "DEFAULT_PYTHIA",
    "pythia_data_dir",
    "ShoweredBlock",
    "shower_block",
    "pythia_shower",
    "pythia_detector",
]

logger = logging.getLogger(__name__)

_SEED_MAX = 900_000_000  # Pythia's Random:seed range
_PROCESS_CODE = 9999


class PythiaError(RuntimeError):
    """Pythia refused a setting, failed to initialise, or could not be found."""


@dataclass(frozen=True)
class PythiaSettings:
    """Options of the Pythia back end (defaults: the module docstring)."""

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


# ---------------------------------------------------------------------------------------------------
# Les Houches records: built vectorised, fed one event at a time by the LHAup subclass.


def _mass(p4: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(axis=-1), 0.0))


def _incoming(final: np.ndarray, e_beam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Incoming momenta from the final-state sum (N, 4): E± = (E ± p_z)/2 -> (e1, e2, x1, x2) each (N,)."""
    total = final.sum(axis=1)  # (N, 4)
    e1 = 0.5 * (total[:, 0] + total[:, 3])
    e2 = 0.5 * (total[:, 0] - total[:, 3])
    return e1, e2, e1 / e_beam, e2 / e_beam


@dataclass
class _LHARecords:
    """Per-event Les Houches rows: ids (N, P), status, mother1, mother2, col, acol (N, P) int;
    p4 (N, P, 4) (E, px, py, pz); mass (N, P); scale (N,); id1, id2 (N,), x1, x2 (N,)."""

    ids: np.ndarray
    status: np.ndarray
    mother1: np.ndarray
    mother2: np.ndarray
    col: np.ndarray
    acol: np.ndarray
    p4: np.ndarray
    mass: np.ndarray
    scale: np.ndarray
    id1: np.ndarray
    id2: np.ndarray
    x1: np.ndarray
    x2: np.ndarray

    def rows(self) -> list[tuple]:
        """Python-native rows per event (keeps the per-event Python in the feed to addParticle calls).

        Each event: ([(id, status, mother1, mother2, col, acol, px, py, pz, e, m), ...], scale, id1, id2, x1, x2);
        slots with id 0 (padding) are left out.
        """
        ints = np.stack(
            [self.ids, self.status, self.mother1, self.mother2, self.col, self.acol], axis=-1
        )  # (N, P, 6)
        p4 = self.p4
        floats = np.stack([p4[..., 1], p4[..., 2], p4[..., 3], p4[..., 0], self.mass], axis=-1)  # (N, P, 5)
        meta = zip(
            self.scale.tolist(),
            self.id1.tolist(),
            self.id2.tolist(),
            self.x1.tolist(),
            self.x2.tolist(),
            strict=True,
        )
        out = []
        for event_ints, event_floats, (scale, id1, id2, x1, x2) in zip(
            ints.tolist(), floats.tolist(), meta, strict=True
        ):
            particles = [(*i, *f) for i, f in zip(event_ints, event_floats, strict=True) if i[0] != 0]
            out.append((particles, scale, int(id1), int(id2), x1, x2))
        return out


def _signal_records(partons: PartonEvents, e_beam: float) -> _LHARecords:
    n = len(partons)
    b = np.asarray(partons.b, dtype=np.float64)  # (N, 4, 4) [h1 b, h1 b̄, h2 b, h2 b̄]
    # the Higgs bosons rebuilt from their daughters so that every decay balances exactly
    higgs = np.stack([b[:, 0] + b[:, 1], b[:, 2] + b[:, 3]], axis=1)  # (N, 2, 4)
    e1, e2, x1, x2 = _incoming(b, e_beam)
    zeros = np.zeros(n)
    g1 = np.stack([e1, zeros, zeros, e1], axis=1)
    g2 = np.stack([e2, zeros, zeros, -e2], axis=1)
    p4 = np.concatenate([g1[:, None], g2[:, None], higgs, b], axis=1)  # (N, 8, 4)
    row = lambda values: np.broadcast_to(np.asarray(values, dtype=np.int64), (n, 8)).copy()  # noqa: E731
    mass = _mass(p4)
    mass[:, :2] = 0.0
    return _LHARecords(
        ids=row([21, 21, 25, 25, 5, -5, 5, -5]),
        status=row([-1, -1, 2, 2, 1, 1, 1, 1]),
        mother1=row([0, 0, 1, 1, 3, 3, 4, 4]),
        mother2=row([0, 0, 2, 2, 0, 0, 0, 0]),
        col=row([501, 502, 0, 0, 503, 0, 504, 0]),
        acol=row([502, 501, 0, 0, 0, 503, 0, 504]),
        p4=p4,
        mass=mass,
        scale=np.asarray(partons.scale, dtype=np.float64),
        id1=np.full(n, 21),
        id2=np.full(n, 21),
        x1=x1,
        x2=x2,
    )


_PAIR_SPLITS = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2]])  # (3, 4): (a1, a2 | b1, b2)


def _background_records(partons: PartonEvents, e_beam: float) -> _LHARecords:
    n = len(partons)
    b = np.asarray(partons.b, dtype=np.float64)  # (N, 4, 4)
    # the pairing into two g* -> b b̄ splittings with the smallest sum of pair masses
    pair_mass = np.stack(
        [_mass(b[:, s[0]] + b[:, s[1]]) + _mass(b[:, s[2]] + b[:, s[3]]) for s in _PAIR_SPLITS], axis=1
    )  # (N, 3)
    order = _PAIR_SPLITS[np.argmin(pair_mass, axis=1)]  # (N, 4)
    quarks = np.take_along_axis(b, order[..., None], axis=1)  # (N, 4, 4): pair A, pair B
    pt = np.hypot(quarks[..., 1], quarks[..., 2])
    for first in (0, 2):  # higher-pT parton of each pair is the b (first slot)
        swap = pt[:, first + 1] > pt[:, first]
        quarks[swap, first : first + 2] = quarks[swap, first : first + 2][:, ::-1]
    e1, e2, x1, x2 = _incoming(quarks, e_beam)
    zeros = np.zeros(n)
    p_in1 = np.stack([e1, zeros, zeros, e1], axis=1)
    p_in2 = np.stack([e2, zeros, zeros, -e2], axis=1)
    p4 = np.concatenate([p_in1[:, None], p_in2[:, None], quarks], axis=1)  # (N, 6, 4)
    incoming = np.asarray(partons.incoming, dtype=np.int64)
    id1, id2 = incoming[:, 0], incoming[:, 1]
    gluons = (id1 == 21) & (id2 == 21)
    quark_first = id1 > 0
    # colour flows (incoming 1, incoming 2, b_A, b̄_A, b_B, b̄_B) as (col, acol)
    # gg -> g*(503,504) g*(504,502), g* -> b b̄:  g1(501,502) g2(503,501)
    col_gg = [501, 503, 503, 0, 504, 0]
    acol_gg = [502, 501, 0, 504, 0, 502]
    # q(501,0) q̄(0,502) -> b(501,0) b̄(0,503) b(503,0) b̄(0,502)
    col_qq = [501, 0, 501, 0, 503, 0]
    acol_qq = [0, 502, 0, 503, 0, 502]
    # q̄(0,501) q(502,0) -> b(502,0) b̄(0,503) b(503,0) b̄(0,501)
    col_qbq = [0, 502, 502, 0, 503, 0]
    acol_qbq = [501, 0, 0, 503, 0, 501]
    col = np.where(gluons[:, None], col_gg, np.where(quark_first[:, None], col_qq, col_qbq))
    acol = np.where(gluons[:, None], acol_gg, np.where(quark_first[:, None], acol_qq, acol_qbq))
    row = lambda values: np.broadcast_to(np.asarray(values, dtype=np.int64), (n, 6)).copy()  # noqa: E731
    ids = row([0, 0, 5, -5, 5, -5])
    ids[:, 0], ids[:, 1] = id1, id2
    mass = _mass(p4)
    mass[:, :2] = 0.0
    return _LHARecords(
        ids=ids,
        status=row([-1, -1, 1, 1, 1, 1]),
        mother1=row([0, 0, 1, 1, 1, 1]),
        mother2=row([0, 0, 2, 2, 2, 2]),
        col=col.astype(np.int64),
        acol=acol.astype(np.int64),
        p4=p4,
        mass=mass,
        scale=np.asarray(partons.scale, dtype=np.float64),
        id1=id1,
        id2=id2,
        x1=x1,
        x2=x2,
    )


def _records(partons: PartonEvents) -> _LHARecords:
    """Les Houches records of signal (process 1) and background (process 0) events, in input order."""
    e_beam = 500.0 * float(partons.sqrt_s_tev)
    is_signal = np.asarray(partons.process) == 1
    if is_signal.all():
        return _signal_records(partons, e_beam)
    if not is_signal.any():
        return _background_records(partons, e_beam)
    parts = {
        True: _signal_records(partons.take(is_signal), e_beam),
        False: _background_records(partons.take(~is_signal), e_beam),
    }
    width = 8  # signal rows; background rows (6) are padded with id 0
    n = len(partons)
    merged = {}
    for name in ("ids", "status", "mother1", "mother2", "col", "acol", "mass", "p4"):
        shape = (n, width, 4) if name == "p4" else (n, width)
        out = np.zeros(shape, dtype=np.float64 if name in ("mass", "p4") else np.int64)
        for flag, rec in parts.items():
            value = getattr(rec, name)
            out[is_signal == flag, : value.shape[1]] = value
        merged[name] = out
    for name in ("scale", "id1", "id2", "x1", "x2"):
        out = np.zeros(n, dtype=np.float64 if name in ("scale", "x1", "x2") else np.int64)
        for flag, rec in parts.items():
            out[is_signal == flag] = getattr(rec, name)
        merged[name] = out
    return _LHARecords(**merged)


# ---------------------------------------------------------------------------------------------------
# One Pythia per process.

_STATE: dict[str, object] = {}


class _PartonFeed(pythia8mc.LHAup):
    """Serves pre-built Les Houches rows to Pythia (``Beams:frameType = 5``); ``load`` swaps in the next block."""

    def __init__(self, e_beam: float):
        super().__init__(3)
        self.e_beam = e_beam
        self.events: list[tuple] = []
        self.position = 0

    def load(self, events: list[tuple]) -> None:
        self.events = events
        self.position = 0

    def setInit(self) -> bool:  # noqa: N802 - Pythia's name
        self.setBeamA(2212, self.e_beam)
        self.setBeamB(2212, self.e_beam)
        self.setStrategy(3)  # unweighted events
        self.addProcess(_PROCESS_CODE, 1.0, 0.0, 1.0)
        return True

    def setEvent(self, idProcess: int = 0) -> bool:  # noqa: N802,N803 - Pythia's names
        if self.position >= len(self.events):
            return False  # Pythia reports the end of the input
        particles, scale, id1, id2, x1, x2 = self.events[self.position]
        self.position += 1
        self.setProcess(_PROCESS_CODE, 1.0, scale, 0.0078125, 0.118)
        for p in particles:
            self.addParticle(*p)
        self.setIdX(id1, id2, x1, x2)
        return True


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


# ---------------------------------------------------------------------------------------------------
# Vectorised extraction from the awkward event record.


def _heaviest_quark(pdg: np.ndarray) -> np.ndarray:
    """Heaviest quark flavour (0 when none) of hadrons; 0 for leptons, quarks, gluons, diquarks."""
    a = np.abs(pdg)
    code = a % 10000  # strip the radial/orbital digits of excited states
    q1, q2, q3 = (code // 1000) % 10, (code // 100) % 10, (code // 10) % 10
    hadron = (a >= 100) & (a < 1_000_000) & (q3 != 0)
    return np.where(hadron, np.where(q1 > 0, q1, q2), 0)


def _pad(
    values: np.ndarray, event: np.ndarray, n_events: int, fill=np.nan, width: int | None = None
) -> np.ndarray:
    """Scatter flat values (M,) with event index (M,) (sorted) into (n_events, width) rows, padded."""
    counts = np.bincount(event, minlength=n_events)
    width = int(counts.max(initial=0)) if width is None else width
    out = np.full((n_events, max(width, 1)), fill, dtype=np.result_type(values, type(fill)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(event)) - starts[event]
    keep = slot < out.shape[1]
    out[event[keep], slot[keep]] = values[keep]
    return out


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), np.sign(pz) * 1e3))
    return pt, eta, np.arctan2(py, px)


@dataclass
class ShoweredBlock:
    """Particle-level jets of a block of events (before detector smearing and tagging).

    jet_p4: (N, J, 4) (E, px, py, pz) GeV, pT-descending, zeros where absent; jet_mask (N, J) bool;
    flavour (N, J) int8 (5, 4, 0); nu_px, nu_py (N,) GeV; n_electrons, n_muons (N,) int16;
    failed (N,) bool (Pythia gave up on the event: no jets);
    higgs_b (N, 4, 4) (E, px, py, pz) of the Higgs decay quarks in the event record (after the ISR recoil),
    in the input's order [H1 b, H1 b̄, H2 b, H2 b̄]; higgs (N, 2, 4) their parents; NaN where absent.
    """

    jet_p4: np.ndarray
    jet_mask: np.ndarray
    flavour: np.ndarray
    nu_px: np.ndarray
    nu_py: np.ndarray
    n_electrons: np.ndarray
    n_muons: np.ndarray
    failed: np.ndarray
    higgs_b: np.ndarray
    higgs: np.ndarray


def _same_event_pairs(
    cand: np.ndarray, vis_event: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All (candidate, particle of the same event) pairs: (T,) candidate position, (T,) flat particle index."""
    ev = vis_event[cand]
    n_pairs = counts[ev]
    total = int(n_pairs.sum())
    owner = np.repeat(np.arange(cand.size), n_pairs)  # (T,)
    offset = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    other = starts[ev][owner] + offset  # (T,) flat visible index
    return owner, other


def _higgs_decays(
    pid: np.ndarray,
    status: np.ndarray,
    mother: np.ndarray,
    has_mother: np.ndarray,
    event_of: np.ndarray,
    n_events: int,
    p4: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The H → b b̄ quarks of the event record, (N, 4, 4), and their Higgs parents, (N, 2, 4); NaN where absent.

    Flat record arrays (M,): pid, status, mother (global index of mother1), has_mother, event_of; p4 (M, 4).
    Each decay quark's Higgs is traced back through its recoil copies to the hard-process Higgs (status
    −22); the first hard-process Higgs of an event is H1 (the input order), b before b̄.
    """
    quarks = np.full((n_events, 4, 4), np.nan)
    parents = np.full((n_events, 2, 4), np.nan)
    is_b = (np.abs(pid) == 5) & has_mother & (pid[mother] == 25)
    cand = np.flatnonzero(is_b)
    if cand.size == 0:
        return quarks, parents
    decayed = mother[cand]  # the Higgs copy that decayed
    origin = decayed.copy()
    for _ in range(64):  # recoil copies: follow mother1 while it is a Higgs
        up = mother[origin]
        step = (np.abs(status[origin]) != 22) & has_mother[origin] & (pid[up] == 25)
        if not step.any():
            break
        origin = np.where(step, up, origin)
    hard_higgs = np.flatnonzero((pid == 25) & (np.abs(status) == 22))
    first_of_event = np.full(n_events, np.iinfo(np.int64).max)
    np.minimum.at(first_of_event, event_of[hard_higgs], hard_higgs)
    event = event_of[cand]
    which = (origin != first_of_event[event]).astype(np.int64)  # 0: H1, 1: H2
    slot = 2 * which + (pid[cand] < 0)
    per_event = np.bincount(event * 4 + slot, minlength=4 * n_events).reshape(n_events, 4)
    complete = (per_event == 1).all(axis=1)
    keep = complete[event]
    quarks[event[keep], slot[keep]] = p4[cand[keep]]
    parents[event[keep], which[keep]] = p4[decayed[keep]]
    return quarks, parents


def _quiet_fastjet() -> None:
    """Send fastjet's one-time banner nowhere (it would land on the CLI's stdout)."""
    if _STATE.get("fastjet_quiet"):
        return
    try:
        from fastjet import _swig

        _swig.ClusterSequence.set_fastjet_banner_stream(None)
    except (ImportError, AttributeError):  # pragma: no cover - other fastjet builds
        pass
    _STATE["fastjet_quiet"] = True


def _extract(events, n_events: int, settings: PythiaSettings, r: float) -> ShoweredBlock:
    _quiet_fastjet()
    prt = events.prt
    counts = ak.to_numpy(ak.num(prt)).astype(np.int64)  # (n,)
    event_of = np.repeat(np.arange(n_events), counts)  # (M,)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pid = ak.to_numpy(ak.flatten(prt.id)).astype(np.int64)
    status = ak.to_numpy(ak.flatten(prt.status))
    mother1 = ak.to_numpy(ak.flatten(prt.mother1)).astype(np.int64)
    p = prt.p
    px = ak.to_numpy(ak.flatten(p.px))
    py = ak.to_numpy(ak.flatten(p.py))
    pz = ak.to_numpy(ak.flatten(p.pz))
    energy = ak.to_numpy(ak.flatten(p.e))
    pt, eta, phi = _eta_phi(px, py, pz)
    apid = np.abs(pid)
    final = status > 0

    # --- truth hadrons: last-in-chain B (C) hadrons with pT > 5 GeV
    heavy = _heaviest_quark(pid)
    has_mother = (mother1 > 0) & (mother1 < np.repeat(counts, counts))
    mother_global = np.where(has_mother, offsets[event_of] + mother1, 0)
    not_last = np.zeros(len(pid), dtype=bool)
    for flavour in (5, 4):
        child = (heavy == flavour) & has_mother
        parent = mother_global[child]
        not_last[parent[heavy[parent] == flavour]] = True
    hadron_ok = ~not_last & (pt > settings.hadron_min_pt)
    higgs_b, higgs = _higgs_decays(
        pid, status, mother_global, has_mother, event_of, n_events, np.stack([energy, px, py, pz], axis=1)
    )
    b_had = np.flatnonzero((heavy == 5) & hadron_ok)
    c_had = np.flatnonzero((heavy == 4) & hadron_ok)

    # --- neutrinos (MET) and visible particles
    neutrino = final & ((apid == 12) | (apid == 14) | (apid == 16))
    nu_px = np.bincount(event_of[neutrino], weights=px[neutrino], minlength=n_events)
    nu_py = np.bincount(event_of[neutrino], weights=py[neutrino], minlength=n_events)
    visible = np.flatnonzero(final & ~neutrino & (np.abs(eta) < settings.particle_max_eta))
    vis_event = event_of[visible]
    vis_counts = np.bincount(vis_event, minlength=n_events)
    vis_starts = np.concatenate([[0], np.cumsum(vis_counts)[:-1]])
    v_pt, v_eta, v_phi = pt[visible], eta[visible], phi[visible]

    # --- isolated leptons
    lep_id = apid[visible]
    cand = np.flatnonzero(
        ((lep_id == 11) | (lep_id == 13))
        & (v_pt > settings.lepton_min_pt)
        & (np.abs(v_eta) < settings.lepton_max_eta)
    )
    isolated_local = np.zeros(cand.size, dtype=bool)
    if cand.size:
        owner, other = _same_event_pairs(cand, vis_event, vis_starts, vis_counts)
        dr = delta_r(v_eta[cand][owner], v_phi[cand][owner], v_eta[other], v_phi[other])
        near = (dr < settings.isolation_dr) & (other != cand[owner])
        iso_sum = np.bincount(owner[near], weights=v_pt[other[near]], minlength=cand.size)
        limit = np.where(lep_id[cand] == 11, settings.electron_isolation, settings.muon_isolation)
        isolated_local = iso_sum / v_pt[cand] < limit
    iso = cand[isolated_local]
    n_electrons = np.bincount(vis_event[iso][lep_id[iso] == 11], minlength=n_events).astype(np.int16)
    n_muons = np.bincount(vis_event[iso][lep_id[iso] == 13], minlength=n_events).astype(np.int16)

    # --- anti-kT jets on the visible particles minus isolated leptons
    use = np.ones(visible.size, dtype=bool)
    use[iso] = False
    inputs_idx = visible[use]
    jet_counts = np.bincount(event_of[inputs_idx], minlength=n_events)
    particles = ak.unflatten(
        ak.zip({"px": px[inputs_idx], "py": py[inputs_idx], "pz": pz[inputs_idx], "E": energy[inputs_idx]}),
        jet_counts,
    )
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, r)
    clustered = fastjet.ClusterSequence(particles, jetdef).inclusive_jets(min_pt=settings.jet_cluster_min_pt)
    n_jet = ak.to_numpy(ak.num(clustered)).astype(np.int64)
    jet_event = np.repeat(np.arange(n_events), n_jet)
    j_px = ak.to_numpy(ak.flatten(clustered.px))
    j_py = ak.to_numpy(ak.flatten(clustered.py))
    j_pz = ak.to_numpy(ak.flatten(clustered.pz))
    j_e = ak.to_numpy(ak.flatten(clustered.E))
    j_pt, j_eta, j_phi = _eta_phi(j_px, j_py, j_pz)
    # pT-descending within each event
    order = np.lexsort((-j_pt, jet_event))
    jet_event, j_px, j_py, j_pz, j_e, j_pt, j_eta, j_phi = (
        a[order] for a in (jet_event, j_px, j_py, j_pz, j_e, j_pt, j_eta, j_phi)
    )
    width = max(int(n_jet.max(initial=0)), 1)
    jet_p4 = np.stack([_pad(a, jet_event, n_events, 0.0, width) for a in (j_e, j_px, j_py, j_pz)], axis=-1)
    jet_mask = _pad(np.ones(len(jet_event), dtype=bool), jet_event, n_events, False, width)
    eta_pad = _pad(j_eta, jet_event, n_events, np.nan, width)  # (n, J)
    phi_pad = _pad(j_phi, jet_event, n_events, np.nan, width)

    def near_any(hadrons: np.ndarray) -> np.ndarray:
        if hadrons.size == 0:
            return np.zeros((n_events, width), dtype=bool)
        h_eta = _pad(eta[hadrons], event_of[hadrons], n_events)  # (n, H)
        h_phi = _pad(phi[hadrons], event_of[hadrons], n_events)
        dr = delta_r(
            eta_pad[:, :, None], phi_pad[:, :, None], h_eta[:, None, :], h_phi[:, None, :]
        )  # (n, J, H)
        return (dr < settings.flavour_dr).any(axis=2)  # NaN compares False

    flavour = np.where(near_any(b_had), 5, np.where(near_any(c_had), 4, 0)).astype(np.int8)
    flavour = np.where(jet_mask, flavour, 0).astype(np.int8)
    return ShoweredBlock(
        jet_p4,
        jet_mask,
        flavour,
        nu_px,
        nu_py,
        n_electrons,
        n_muons,
        np.zeros(n_events, dtype=bool),
        higgs_b,
        higgs,
    )


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


def _extract_empty() -> ShoweredBlock:
    return ShoweredBlock(
        np.zeros((0, 1, 4)),
        np.zeros((0, 1), bool),
        np.zeros((0, 1), np.int8),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0, np.int16),
        np.zeros(0, np.int16),
        np.zeros(0, bool),
        np.zeros((0, 4, 4)),
        np.zeros((0, 2, 4)),
    )


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


def _detector_response(block: ShoweredBlock, rng: np.random.Generator, par: DetectorParameters) -> JetEvents:
    """Energy smearing, acceptance, b-tagging and MET on particle-level jets (vectorised)."""
    p4 = block.jet_p4
    n, width = block.jet_mask.shape
    energy = p4[..., 0]
    sigma = np.sqrt((par.resolution_constant * energy) ** 2 + par.resolution_stochastic**2 * energy)
    scale = np.maximum(1.0 + sigma / np.maximum(energy, 1e-9) * rng.standard_normal((n, width)), 0.05)
    measured = p4 * scale[..., None]  # (N, J, 4)
    pt_true = np.hypot(p4[..., 1], p4[..., 2])
    pt, eta, phi = _eta_phi(measured[..., 1], measured[..., 2], measured[..., 3])
    mass = np.sqrt(np.maximum(measured[..., 0] ** 2 - (measured[..., 1:] ** 2).sum(axis=-1), 0.0))
    accepted = block.jet_mask & (pt > par.jet_min_pt) & (np.abs(eta) < par.jet_max_eta)
    btag = apply_btagging(block.flavour, accepted, rng, par)
    dpt = np.where(block.jet_mask, pt_true - pt, 0.0)
    met_x = block.nu_px + (dpt * np.cos(phi)).sum(axis=1)
    met_y = block.nu_py + (dpt * np.sin(phi)).sum(axis=1)
    key = np.where(accepted, pt, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")  # (N, J) pT-descending, rejected last
    n_keep = max(int(accepted.sum(axis=1).max(initial=0)), 1)
    order = order[:, :n_keep]

    def ordered(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, order, axis=1)

    mask = ordered(accepted)
    return JetEvents(
        pt=np.where(mask, ordered(pt), 0.0),
        eta=np.where(mask, ordered(eta), 0.0),
        phi=np.where(mask, ordered(phi), 0.0),
        mass=np.where(mask, ordered(mass), 0.0),
        btag=ordered(btag) & mask,
        mask=mask,
        flavour=np.where(mask, ordered(block.flavour), 0).astype(np.int8),
        met=np.hypot(met_x, met_y),
        met_phi=np.arctan2(met_y, met_x),
        n_electrons=block.n_electrons.astype(np.int16),
        n_muons=block.n_muons.astype(np.int16),
    )


def _showered_truth(partons: PartonEvents, block: ShoweredBlock) -> PartonEvents:
    """A copy of `partons` whose signal b quarks and Higgs bosons are the event record's (after ISR recoil).

    Rows without a complete H → b b̄ record (background, failed events) keep the input momenta; h1/h2 are
    re-ordered so that h1 stays the higher-pT Higgs.
    """
    b = np.array(partons.b, dtype=np.float64, copy=True)  # (N, 4, 4)
    higgs = (
        np.array(partons.higgs, dtype=np.float64, copy=True)
        if partons.higgs is not None
        else np.full((len(partons), 2, 4), np.nan)
    )
    use = (np.asarray(partons.process) == 1) & np.isfinite(block.higgs_b).all(axis=(1, 2))
    use &= np.isfinite(block.higgs).all(axis=(1, 2))
    b[use] = block.higgs_b[use]
    higgs[use] = block.higgs[use]
    higgs_pt = np.hypot(higgs[..., 1], higgs[..., 2])  # (N, 2)
    swap = use & (higgs_pt[:, 1] > higgs_pt[:, 0])
    b[swap] = b[swap][:, [2, 3, 0, 1]]
    higgs[swap] = higgs[swap][:, ::-1]
    out = partons.take(np.arange(len(partons)))
    out.b = b
    out.higgs = higgs if (partons.higgs is not None or use.any()) else None
    return out


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
    from dataclasses import replace

    return replace(settings, env=dict(env))
