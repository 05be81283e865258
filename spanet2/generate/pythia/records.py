"""Les Houches records of our parton events, and the ``LHAup`` feed that hands them to Pythia.

The parton events (signal gg → HH → bb̄bb̄ or QCD 4b) reach Pythia 8 through a Python
``pythia8mc.LHAup`` subclass (``Beams:frameType = 5``). The records are built vectorised for a whole
block and served one event at a time:

- signal: g(501,502) g(502,501) → H H (status 2 resonances), H → b(503,0) b̄(0,503) and b(504,0) b̄(0,504):
  the decays are written in. Shower start scale = ``partons.scale`` (μ_F = m_HH/2).
- background: the four b partons are paired into two g* → bb̄ splittings (the pairing with the smallest
  sum of pair masses) with the colour flow of gg → gg (or qq̄ → gg for quark-initiated events); start
  scale = ``partons.scale``. Where the generator knows the charges (``partons.b_pdg``, the exact
  background) only the two b–b̄ pairings are candidates and each b keeps its identity; otherwise (the
  approximate model) the higher-pT parton of a pair is taken as the b.
- incoming partons along ±z carry the final state's E ± p_z, so four-momentum balances exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pythia8mc

from spanet2.generate.partons import PartonEvents

_PROCESS_CODE = 9999  # the one process the feed declares (addProcess) and tags every event with


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


def _pairs_by_charge(b: np.ndarray, b_pdg: np.ndarray) -> np.ndarray:
    """(N, 4, 4) momenta as [b, b̄ | b, b̄]: of the two b–b̄ pairings, the one with the smaller mass sum."""
    quark = np.argsort(-np.sign(b_pdg), axis=1, kind="stable")  # (N, 4): the two b's, then the two b̄'s
    splits = np.array([[0, 2, 1, 3], [0, 3, 1, 2]])  # (2, 4) in that order: (b₁ b̄₁ | b₂ b̄₂), (b₁ b̄₂ | b₂ b̄₁)
    candidates = [np.take_along_axis(quark, np.broadcast_to(s, quark.shape), axis=1) for s in splits]
    masses = np.stack(
        [
            _mass(np.take_along_axis(b, c[:, 0:1, None], 1)[:, 0] + np.take_along_axis(b, c[:, 1:2, None], 1)[:, 0])
            + _mass(np.take_along_axis(b, c[:, 2:3, None], 1)[:, 0] + np.take_along_axis(b, c[:, 3:4, None], 1)[:, 0])
            for c in candidates
        ],
        axis=1,
    )  # (N, 2)
    order = np.where((np.argmin(masses, axis=1) == 0)[:, None], candidates[0], candidates[1])
    return np.take_along_axis(b, order[..., None], axis=1)


def _background_records(partons: PartonEvents, e_beam: float) -> _LHARecords:
    n = len(partons)
    b = np.asarray(partons.b, dtype=np.float64)  # (N, 4, 4)
    if partons.b_pdg is not None:
        quarks = _pairs_by_charge(b, np.asarray(partons.b_pdg))
    else:
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
