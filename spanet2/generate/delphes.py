"""Delphes ROOT files → SPANet HDF5 (uproot): jets, MET, leptons, Higgs b-quark truth, four-tag selection.

The ``Delphes`` tree's branches are read chunk by chunk (``uproot`` ``iterate``; memory does not grow with
the file): ``Jet.{PT, Eta, Phi, Mass, BTag}`` (required), ``Jet.Flavor``, ``MissingET.{MET, Phi}``,
``Electron.PT``, ``Muon.PT`` and ``Particle.{PID, M1, PT, Eta, Phi, Mass}`` (optional). Branch names are
accepted as Delphes writes them (``Jet/Jet.PT`` inside the split ``Jet`` branch), flat (``Jet.PT``) or
with uproot's default field naming (``Jet_PT``).

Truth: the b quarks whose mother is a Higgs boson (|PID| = 5, PID[M1] = 25); an event with exactly two
Higgs → b b̄ decays is signal, ordered [h1 b, h1 b̄, h2 b, h2 b̄] with h1 the higher-pT Higgs. Jets are then
matched, selected (four b-tags with pT > 40 GeV, |η| < 2.5) and written with the generator's own
``finalize_events``, so Delphes files and generated files share one layout (this reader sits beside the
other event sources in ``generate`` for that reason). Leptons: the
Delphes electrons / muons (already isolated by the card) with pT > 10 GeV are counted; b-tag = bit 0 of
``Jet.BTag``; truth flavour from ``Jet.Flavor``.

Not available from a Delphes file and therefore not written: ``WEIGHTS/kappa_terms`` (the per-event κλ
decomposition; morph between files instead, docs/physics.md §7). Weights are ``cross_section_fb / N_read``
per event (Σ over the written events = σ × selection efficiency) when a cross section is given, else
``1 / N_read`` (then Σ = the efficiency; the file's ``weights_normalisation`` attribute says so).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.errors import DataError, InputError
from spanet2.events.hdf5 import HDF5Writer
from spanet2.events.jets import JetEvents
from spanet2.events.layout import KAPPA_TERMS_PATH, TRUTH_PROCESS_PATH
from spanet2.generate.partons import PartonEvents
from spanet2.generate.selection import finalize_events  # the generator's selection, shared on purpose
from spanet2.physics.kinematics import ptetaphim_to_p4
from spanet2.provenance import provenance

__all__ = [
    "DELPHES_TREE",
    "REQUIRED_BRANCHES",
    "OPTIONAL_BRANCHES",
    "DelphesChunk",
    "resolve_branches",
    "higgs_b_quarks",
    "iter_delphes",
    "count_events",
    "convert_delphes",
]

logger = logging.getLogger(__name__)

DELPHES_TREE = "Delphes"
REQUIRED_BRANCHES = ("Jet.PT", "Jet.Eta", "Jet.Phi", "Jet.Mass", "Jet.BTag")
OPTIONAL_BRANCHES = (
    "Jet.Flavor",
    "MissingET.MET",
    "MissingET.Phi",
    "Electron.PT",
    "Muon.PT",
    "Particle.PID",
    "Particle.M1",
    "Particle.PT",
    "Particle.Eta",
    "Particle.Phi",
    "Particle.Mass",
)
_ALIASES = {"Particle.Mass": ("Particle.Mass", "Particle.M")}
_TRUTH = ("Particle.PID", "Particle.M1", "Particle.PT", "Particle.Eta", "Particle.Phi", "Particle.Mass")
_LEPTON_MIN_PT = 10.0  # GeV, as the fast detector counts leptons


def resolve_branches(keys: Sequence[str], wanted: Sequence[str]) -> dict[str, str]:
    """Map wanted names ("Jet.PT") to the tree's keys: "Jet/Jet.PT", "Jet.PT" or "Jet_PT"; absent ones omitted."""
    by_name: dict[str, str] = {}
    for key in keys:
        last = key.rsplit("/", 1)[-1]
        by_name.setdefault(last, key)
        by_name.setdefault(key, key)
    found = {}
    for name in wanted:
        for alias in _ALIASES.get(name, (name,)):
            for spelling in (alias, alias.replace(".", "_", 1)):
                if spelling in by_name:
                    found[name] = by_name[spelling]
                    break
            if name in found:
                break
    return found


@dataclass
class DelphesChunk:
    """One chunk of a Delphes tree as padded arrays.

    jets: the reconstructed jets, MET and lepton counts (JetEvents; pt, eta, phi, mass float64, btag bool);
    quarks (N, 4, 4) (pT, η, φ, m) of the Higgs b quarks [h1 b, h1 b̄, h2 b, h2 b̄] (NaN where absent);
    higgs (N, 2, 4) (pT, η, φ, m) (NaN where absent); is_signal (N,) bool (two Higgs → b b̄ decays found).
    """

    jets: JetEvents
    quarks: np.ndarray
    higgs: np.ndarray
    is_signal: np.ndarray

    def __len__(self) -> int:
        return len(self.jets)


def _padded(array: Any, width: int, fill: float, dtype) -> np.ndarray:
    import awkward as ak

    return ak.to_numpy(ak.fill_none(ak.pad_none(array, width, clip=True), fill)).astype(dtype)


def higgs_b_quarks(pid: Any, mother1: Any, kin: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the Higgs → b b̄ quarks in jagged Particle arrays (vectorised over the flattened record).

    pid, mother1: (N, var) int (mother1 = index into the same event's particles, −1 none);
    kin: {"PT", "Eta", "Phi", "Mass"} (N, var). Returns quarks (N, 4, 4) and higgs (N, 2, 4) as
    (pT, η, φ, m) with NaN where absent, and (N,) bool: exactly two Higgs, each with one b and one b̄.
    """
    import awkward as ak

    counts = ak.to_numpy(ak.num(pid)).astype(np.int64)
    n = len(counts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    event = np.repeat(np.arange(n), counts)  # (M,)
    flat_pid = ak.to_numpy(ak.flatten(pid)).astype(np.int64)
    flat_m1 = ak.to_numpy(ak.flatten(mother1)).astype(np.int64)
    flat_kin = np.stack(
        [ak.to_numpy(ak.flatten(kin[k])).astype(np.float64) for k in ("PT", "Eta", "Phi", "Mass")], axis=1
    )  # (M, 4)
    valid_mother = (flat_m1 >= 0) & (flat_m1 < counts[event])
    mother = np.where(valid_mother, offsets[event] + flat_m1, 0)
    is_b = (np.abs(flat_pid) == 5) & valid_mother & (flat_pid[mother] == 25)
    cand = np.flatnonzero(is_b)
    quarks = np.full((n, 4, 4), np.nan)
    higgs = np.full((n, 2, 4), np.nan)
    ok = np.zeros(n, dtype=bool)
    if cand.size == 0:
        return quarks, higgs, ok
    c_event = event[cand]
    c_mother = mother[cand]
    c_mother_pt = flat_kin[c_mother, 0]
    # order: event, Higgs pT descending, Higgs index, b (PID 5) before b̄ (−5)
    order = np.lexsort((-flat_pid[cand], c_mother, -c_mother_pt, c_event))
    cand, c_event, c_mother = cand[order], c_event[order], c_mother[order]
    per_event = np.bincount(c_event, minlength=n)
    four = per_event == 4
    starts = np.concatenate([[0], np.cumsum(per_event)[:-1]])
    rows = np.flatnonzero(four)
    if rows.size:
        take = starts[rows][:, None] + np.arange(4)[None, :]  # (R, 4) positions in the candidate list
        ids = flat_pid[cand[take]]
        mothers = c_mother[take]
        good = (
            (ids == np.array([5, -5, 5, -5])).all(axis=1)
            & (mothers[:, 0] == mothers[:, 1])
            & (mothers[:, 2] == mothers[:, 3])
            & (mothers[:, 0] != mothers[:, 2])
        )
        rows, take, mothers = rows[good], take[good], mothers[good]
        quarks[rows] = flat_kin[cand[take]]
        higgs[rows] = flat_kin[mothers[:, [0, 2]]]
        ok[rows] = True
    return quarks, higgs, ok


def _chunk_from_arrays(arrays: dict[str, Any], n: int) -> DelphesChunk:
    import awkward as ak

    width = max(int(ak.max(ak.num(arrays["Jet.PT"]), initial=0)), 1) if n else 1
    counts = ak.to_numpy(ak.num(arrays["Jet.PT"]))
    mask = np.arange(width)[None, :] < counts[:, None]  # (N, J)
    pt = _padded(arrays["Jet.PT"], width, 0.0, np.float64)
    eta = _padded(arrays["Jet.Eta"], width, 0.0, np.float64)
    phi = _padded(arrays["Jet.Phi"], width, 0.0, np.float64)
    mass = _padded(arrays["Jet.Mass"], width, 0.0, np.float64)
    btag_bits = _padded(arrays["Jet.BTag"], width, 0, np.int64)  # bit 0: the card's (first) b-tagger
    btag = ((btag_bits & 1) != 0) & mask
    if "Jet.Flavor" in arrays:
        fl = np.abs(_padded(arrays["Jet.Flavor"], width, 0, np.int64))
        flavour = np.where(fl == 5, 5, np.where(fl == 4, 4, 0)).astype(np.int8)
    else:
        flavour = np.zeros((n, width), dtype=np.int8)
    if "MissingET.MET" in arrays:
        met = ak.to_numpy(ak.fill_none(ak.firsts(arrays["MissingET.MET"]), 0.0)).astype(np.float64)
        met_phi = (
            ak.to_numpy(ak.fill_none(ak.firsts(arrays["MissingET.Phi"]), 0.0)).astype(np.float64)
            if "MissingET.Phi" in arrays
            else np.zeros(n)
        )
    else:
        met, met_phi = np.zeros(n), np.zeros(n)

    def count(name: str) -> np.ndarray:
        if name not in arrays:
            return np.zeros(n, dtype=np.int16)
        return ak.to_numpy(ak.sum(arrays[name] > _LEPTON_MIN_PT, axis=1)).astype(np.int16)

    if all(k in arrays for k in _TRUTH):
        quarks, higgs, is_signal = higgs_b_quarks(
            arrays["Particle.PID"],
            arrays["Particle.M1"],
            {
                "PT": arrays["Particle.PT"],
                "Eta": arrays["Particle.Eta"],
                "Phi": arrays["Particle.Phi"],
                "Mass": arrays["Particle.Mass"],
            },
        )
    else:
        quarks, higgs, is_signal = np.full((n, 4, 4), np.nan), np.full((n, 2, 4), np.nan), np.zeros(n, bool)
    jets = JetEvents(
        pt, eta, phi, mass, btag, mask & (pt > 0), flavour, met, met_phi, count("Electron.PT"), count("Muon.PT")
    )
    return DelphesChunk(jets, quarks, higgs, is_signal)


def _open_tree(path: str | os.PathLike, tree: str):
    import uproot

    if not Path(path).is_file():
        raise DataError(path, None, "no such file (expected a Delphes ROOT file)")
    try:
        handle = uproot.open(path)
    except Exception as exc:  # uproot raises ValueError/OSError/its own errors for non-ROOT input
        raise DataError(
            path, None, f"not a readable ROOT file ({' '.join(str(exc).split())[:160]})"
        ) from None
    try:
        return handle[tree]
    except Exception:
        found = ", ".join(sorted({k.split(";")[0] for k in handle.keys()})) or "nothing"
        raise DataError(path, tree, f"expected a TTree named {tree!r}; the file holds {found}") from None


def count_events(path: str | os.PathLike, *, tree: str = DELPHES_TREE) -> int:
    """Number of events in the Delphes tree (DataError on a bad file)."""
    return int(_open_tree(path, tree).num_entries)


def iter_delphes(
    path: str | os.PathLike, *, tree: str = DELPHES_TREE, step_size: int = 10_000
) -> Iterator[DelphesChunk]:
    """Yield DelphesChunk objects of at most `step_size` events; DataError on a bad file or missing branch."""
    ttree = _open_tree(path, tree)
    keys = ttree.keys(recursive=True)
    branches = resolve_branches(keys, REQUIRED_BRANCHES + OPTIONAL_BRANCHES)
    missing = [b for b in REQUIRED_BRANCHES if b not in branches]
    if missing:
        raise DataError(
            path,
            f"{tree}/{missing[0]}",
            f"expected the Delphes branch {missing[0]} (jets: {', '.join(REQUIRED_BRANCHES)})",
        )
    if not all(k in branches for k in _TRUTH):
        logger.warning(
            "%s: no complete Particle branch (%s): no truth matching, every event is background",
            path,
            ", ".join(_TRUTH),
        )
    names = list(branches)
    inverse = {full: name for name, full in branches.items()}
    try:
        for arrays in ttree.iterate(
            [branches[n] for n in names], step_size=step_size, library="ak", how=dict
        ):
            renamed = {inverse[k]: v for k, v in arrays.items()}
            n = len(renamed["Jet.PT"])
            yield _chunk_from_arrays(renamed, n)
    except DataError:
        raise
    except Exception as exc:  # a truncated or inconsistent file
        raise DataError(
            path, tree, f"cannot read the Delphes branches ({' '.join(str(exc).split())[:160]})"
        ) from None


def _to_p4(ptetaphim: np.ndarray) -> np.ndarray:
    return ptetaphim_to_p4(ptetaphim[..., 0], ptetaphim[..., 1], ptetaphim[..., 2], ptetaphim[..., 3])


def _empty_chunk() -> DelphesChunk:
    z, e = np.zeros((0, 1)), np.zeros(0)
    jets = JetEvents(z, z, z, z, z.astype(bool), z.astype(bool), z.astype(np.int8), e, e,
                     e.astype(np.int16), e.astype(np.int16))  # fmt: skip
    return DelphesChunk(jets, np.zeros((0, 4, 4)), np.zeros((0, 2, 4)), np.zeros(0, bool))


def _select_chunk(
    chunk: DelphesChunk,
    *,
    process: str,
    kappa_list: np.ndarray,
    kappa: float | None,
    weight: float,
    sqrt_s_tev: float | None,
    max_jets: int,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Truth-match and select one chunk with the generator's finalize_events; (HDF5 dict, (N,) signal flags)."""

    n = len(chunk)
    signal = {"auto": chunk.is_signal, "signal": np.ones(n, bool), "background": np.zeros(n, bool)}[process]
    with np.errstate(invalid="ignore"):
        b = _to_p4(np.where(signal[:, None, None], chunk.quarks, np.nan))  # (N, 4, 4), NaN where absent
        higgs = _to_p4(np.where(signal[:, None, None], chunk.higgs, np.nan))  # (N, 2, 4)
    k_in = rng.choice(kappa_list, size=n)
    if kappa is not None:
        k_in = np.where(signal, kappa, k_in)
    nan = np.full(n, np.nan)
    partons = PartonEvents(
        b=b,
        weight=np.full(n, weight),
        kappa_terms=np.zeros((n, 3)),
        kappa=np.full(n, np.nan if kappa is None else float(kappa)),
        process=signal.astype(np.int8),
        x1=nan,
        x2=nan,
        scale=nan,
        incoming=np.zeros((n, 2), dtype=np.int64),
        extra=None,
        extra_pdg=None,
        higgs=higgs,
        sqrt_s_tev=float(sqrt_s_tev) if sqrt_s_tev is not None else float("nan"),
    )
    with np.errstate(invalid="ignore"):
        events = finalize_events(chunk.jets, partons, kappa_input=k_in, max_jets=max_jets)
    events.pop(KAPPA_TERMS_PATH)  # not known for a Delphes file (module docstring)
    return events, signal


def convert_delphes(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    kappa_inputs: Sequence[float],
    seed: int = 0,
    kappa: float | None = None,
    cross_section_fb: float | None = None,
    sqrt_s_tev: float | None = None,
    process: str = "auto",
    max_jets: int = 10,
    step_size: int = 10_000,
    tree: str = DELPHES_TREE,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Convert a Delphes ROOT file into a SPANet HDF5 file (atomic write). Returns the file's attributes.

    kappa_inputs: the κλ fed to the network is drawn per event from this list (seeded by `seed`); signal
    events take `kappa` instead when it is given (the generated κλ of a one-point signal file, also written
    as TRUTH/kappa). process: "auto" (signal = two Higgs → b b̄ decays found), "signal" (events without
    them stay in, unmatched) or "background" (no truth matching). Weights: module docstring.
    """

    if process not in ("auto", "signal", "background"):
        raise InputError("--process", None, f"expected auto, signal or background, got {process!r}")
    kappa_list = np.asarray(list(kappa_inputs), dtype=np.float64)
    if kappa_list.size == 0 or not np.isfinite(kappa_list).all():
        raise InputError("--kappa-input", None, "expected a non-empty list of finite κλ values")
    if cross_section_fb is not None and not (np.isfinite(cross_section_fb) and cross_section_fb > 0):
        raise InputError(
            "--cross-section-fb", None, f"expected a positive cross section in fb, got {cross_section_fb}"
        )
    if kappa is not None and not np.isfinite(kappa):
        raise InputError("--kappa", None, f"expected a finite κλ, got {kappa}")
    if max_jets < 4:
        raise InputError("--max-jets", None, f"expected at least 4 jets per event, got {max_jets}")
    ttree = _open_tree(input_path, tree)
    n_total = int(ttree.num_entries)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0DE1]))
    per_event = (cross_section_fb if cross_section_fb is not None else 1.0) / max(n_total, 1)
    attrs: dict[str, Any] = {
        "source": "delphes",
        "input_file": str(input_path),
        "n_read": n_total,
        "kappa_inputs": kappa_list.tolist(),
        "process_rule": process,
        "weights_normalisation": (
            "cross_section_fb / n_read"
            if cross_section_fb is not None
            else "1 / n_read (no cross section given: the weights sum to the efficiency)"
        ),
        "provenance": provenance(
            operation="convert-delphes",
            seed=seed,
            kappa=kappa,
            cross_section_fb=cross_section_fb,
            max_jets=max_jets,
        ),
    }
    if cross_section_fb is not None:
        attrs["cross_section_fb_before_selection"] = float(cross_section_fb)
    if sqrt_s_tev is not None:
        attrs["sqrt_s_tev"] = float(sqrt_s_tev)
    n_signal = n_selected = 0
    appended = False
    select = functools.partial(
        _select_chunk, process=process, kappa_list=kappa_list, kappa=kappa, weight=per_event,
        sqrt_s_tev=sqrt_s_tev, max_jets=max_jets, rng=rng,
    )  # fmt: skip
    with HDF5Writer(output_path, attrs=attrs) as writer:
        for chunk in iter_delphes(input_path, tree=tree, step_size=step_size):
            events, signal = select(chunk)
            writer.append(events)
            appended = True
            n_signal += int(signal.sum())
            n_selected += len(events[TRUTH_PROCESS_PATH])
            if progress:
                progress(len(chunk))
        if not appended:  # an empty tree: still write every dataset (0 rows)
            events, _ = select(_empty_chunk())
            writer.append(events)
        if n_selected == 0:
            logger.warning("%s: no event passed the four-tag cut", input_path)
        writer.attrs.update(
            n_signal_read=n_signal, n_selected=n_selected, efficiency=n_selected / n_total if n_total else 0.0
        )
    logger.info(
        "%s: %d of %d events pass the four-tag cut (%d signal read)",
        output_path,
        n_selected,
        n_total,
        n_signal,
    )
    return dict(writer.attrs)
