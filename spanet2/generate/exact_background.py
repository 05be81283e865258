"""QCD pp → bb̄bb̄ at exact LO: every tree diagram at full colour (pyAmpliCol), PDFs, VEGAS, unweighting.

What is computed (MadGraph's ``p p > b b~ b b~`` in its default ``sm``, 4-flavour scheme):

    σ = Σ_ij ∫ dx₁ dx₂ f_i(x₁, μ_F) f_j(x₂, μ_F) · |M_ij|²(α_s(μ_R)) / (2ŝ) dΦ₄ · Θ(generator cuts)

- i j = g g, and q q̄ / q̄ q for q = u, d, s, c (no b in the proton); |M|² from `tree_me` (m_b = 4.7 GeV,
  full colour, QCD only), rescaled per event by (α_s(μ_R)/0.118)⁴ — |M|² ∝ α_s⁴ exactly.
- NNPDF2.3 LO (shipped grid) and its one-loop α_s (α_s(M_Z) = 0.130), μ_R = μ_F = μ.
- μ ("madgraph", the default): MadGraph's default dynamical scale (``dynamical_scale_choice = -1``):
  the event is kT-clustered back to a 2 → 2 core (only QCD-allowed merges: b b̄ → g, b g → b,
  g g → g; final-state clustering only, the beam-side back-clustering of MadGraph is not done) and
  μ = √(m_T,1 m_T,2) of the two core objects (= their common pT when massless). "ht_half":
  μ = Σ m_T(b)/2 over the four b quarks, for comparison.
- Phase space: `phase_space.PairChannel` (two g* → bb̄ pairs), its five mapped variables adapted by a
  VEGAS map (the `vegas` package) in a survey, the b-label multichannel over the four relabellings.
- The survey (grid adaptation, then σ ± its MC error and the unweighting reference w_ref from a fresh
  sample) is deterministic for its key and cached next to the artifacts; event generation then draws
  from the adapted map and keeps a trial with probability min(w / w_ref, 1), at weight max(w, w_ref):
  exact in expectation (events above w_ref keep their excess), most events share one weight. A call's
  weights are normalised to sum to the survey's σ (fb), as the approximate model's are.

Generator cuts (`DEFAULT_CUTS`): the note's MadGraph sample's, pT^b > 25 GeV, |η^b| < 2.5, no ΔR cut
(the b mass regulates g → bb̄), so the sample is the note's process definition. They are not "invisible"
to the four-tag cut: through the fast detector's initial-state heavy-flavour jets and wide-angle FSR an
event with one soft b can still carry four tags, and loosening the pT cut to 20 GeV adds 3.9 ± 0.3 % to the
four-tag σ (docs/background.md) — events the note's sample lacks as well.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from spanet2.atomic import atomic_path
from spanet2.generate.partons import PartonEvents
from spanet2.generate.pdf import alpha_s, default_pdf
from spanet2.generate.phase_space import (
    N_MAPPED,
    PERMUTATIONS,
    GeneratorCuts,
    PairChannel,
    PtChannel,
    passes_cuts,
)
from spanet2.generate.tree_me import ALPHA_S_ARTIFACT, cache_root, matrix_element

__all__ = [
    "DEFAULT_CUTS",
    "SCALE_CHOICES",
    "Survey",
    "survey",
    "exact_cross_section",
    "generate_exact_background_partons",
    "generate_selected_background",
    "four_tag_selection",
]

logger = logging.getLogger(__name__)

GEV2_TO_FB = 0.3893794e12  # 1 GeV⁻² in fb
DEFAULT_CUTS = GeneratorCuts(min_pt=25.0, max_eta=2.5, min_dr=0.0)  # the note's MadGraph generator cuts
SCALE_CHOICES = ("madgraph", "ht_half")
_QUARKS = (2, 1, 3, 4)  # u, d, s, c: the 4-flavour scheme's light quarks (massless, flavour-blind |M|²)
# incoming pairs in the order of the flavour columns: gg, then (q, q̄), (q̄, q) for each quark
INCOMING = np.array([[21, 21]] + [pair for q in _QUARKS for pair in ([q, -q], [-q, q])], dtype=np.int64)
_SURVEY_VERSION = 2  # bump when the survey's arithmetic changes (invalidates cached surveys)
# VEGAS: 32 increments on each of the pair channel's ten variables, damped adaptation (α = 0.5). Measured on
# the four-tag survey (13 TeV, 800k trials): 6.8e-4 accepted events per trial, against 4.4e-4 with only the
# first five variables adapted at α = 1 and 3.6e-4 with all ten at α = 1, 64 increments (noisy grids).
_NINC = 32
_VEGAS_DAMPING = 0.5


# -- scale --------------------------------------------------------------------------------------------------
def _mt(p: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p[..., 0] ** 2 - p[..., 3] ** 2, 0.0))


def core_scale(b: np.ndarray, pdg: np.ndarray) -> np.ndarray:
    """μ (N,) of MadGraph's default: kT-cluster (R = 1) the four b's with QCD-allowed merges to two objects.

    b: (N, 4, 4); pdg: (N, 4) ±5. d_ij = min(pT_i², pT_j²) ΔR_ij², merges allowed when the flavours add up
    to a parton (|Σ sign| ≤ 1); μ = √(m_T,1 m_T,2) of the two remaining objects.
    """
    n = len(b)
    obj = np.array(b, dtype=np.float64, copy=True)  # (N, 4, 4)
    flav = np.sign(pdg).astype(np.int64)  # (N, 4): +1 b, −1 b̄, 0 g
    alive = np.ones((n, 4), dtype=bool)
    i_idx, j_idx = np.triu_indices(4, 1)
    rows = np.arange(n)
    for _ in range(2):
        pt2 = obj[..., 1] ** 2 + obj[..., 2] ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            rap = 0.5 * np.log((obj[..., 0] + obj[..., 3]) / (obj[..., 0] - obj[..., 3]))
        phi = np.arctan2(obj[..., 2], obj[..., 1])
        dphi = np.abs(phi[:, i_idx] - phi[:, j_idx])
        dphi = np.minimum(dphi, 2 * np.pi - dphi)
        dr2 = (rap[:, i_idx] - rap[:, j_idx]) ** 2 + dphi**2  # (N, 6)
        d = np.minimum(pt2[:, i_idx], pt2[:, j_idx]) * dr2
        allowed = alive[:, i_idx] & alive[:, j_idx] & (np.abs(flav[:, i_idx] + flav[:, j_idx]) <= 1)
        d = np.where(allowed & np.isfinite(d), d, np.inf)
        k = np.argmin(d, axis=1)
        a, c = i_idx[k], j_idx[k]
        obj[rows, a] += obj[rows, c]
        flav[rows, a] += flav[rows, c]
        alive[rows, c] = False
    mt = np.where(alive, _mt(obj), 1.0)  # (N, 4): the dead slots contribute 1 to the product
    return np.sqrt(np.prod(mt, axis=1))


def _scale(b: np.ndarray, pdg: np.ndarray, choice: str) -> np.ndarray:
    if choice == "madgraph":
        return core_scale(b, pdg)
    if choice == "ht_half":
        return 0.5 * _mt(b).sum(axis=1)
    raise ValueError(f"scale must be one of {SCALE_CHOICES}, got {choice!r}")


# -- the integrand -------------------------------------------------------------------------------------------
_B_PDG = np.array([5, -5, 5, -5])


def _integrand(b: np.ndarray, x1: np.ndarray, x2: np.ndarray, sqrt_s: float, scale: str):
    """F (N,) = Σ_ij f_i f_j |M_ij|² / (2ŝ) in fb per unit dτ dy dΦ₄, its (N, 9) flavour parts, and μ (N,)."""
    n = len(b)
    e1, e2 = 0.5 * sqrt_s * x1, 0.5 * sqrt_s * x2
    zeros = np.zeros(n)
    p1 = np.stack([e1, zeros, zeros, e1], axis=1)
    p2 = np.stack([e2, zeros, zeros, -e2], axis=1)
    momenta = np.concatenate([p1[:, None], p2[:, None], b], axis=1)  # (N, 6, 4)
    swapped = np.concatenate([p2[:, None], p1[:, None], b], axis=1)  # q̄ q = q q̄ with incoming swapped
    mu = _scale(b, np.broadcast_to(_B_PDG, (n, 4)), scale)
    pdf = default_pdf()
    f1 = {pdg: pdf.xfx(pdg, x1, mu) / x1 for pdg in (21, *_QUARKS, *(-q for q in _QUARKS))}
    f2 = {pdg: pdf.xfx(pdg, x2, mu) / x2 for pdg in (21, *_QUARKS, *(-q for q in _QUARKS))}
    me_gg = matrix_element("gg")(momenta)
    me_qq = matrix_element("qq")(momenta)
    me_qbq = matrix_element("qq")(swapped)
    columns = [f1[21] * f2[21] * me_gg]
    for q in _QUARKS:
        columns += [f1[q] * f2[-q] * me_qq, f1[-q] * f2[q] * me_qbq]
    shat = x1 * x2 * sqrt_s**2
    factor = (alpha_s(mu) / ALPHA_S_ARTIFACT) ** 4 / (2 * shat) * GEV2_TO_FB
    parts = np.stack(columns, axis=1) * factor[:, None]  # (N, 9)
    return parts.sum(axis=1), parts, mu


@dataclass(frozen=True)
class _Setup:
    sqrt_s_tev: float
    cuts: GeneratorCuts
    scale: str

    @property
    def sqrt_s(self) -> float:
        return 1e3 * self.sqrt_s_tev

    def channels(self) -> tuple[PairChannel, PtChannel]:
        m_b = matrix_element("gg").m_b
        return PairChannel(self.sqrt_s, m_b, self.cuts), PtChannel(self.sqrt_s, m_b, self.cuts)


def _vegas_map(grid: np.ndarray | None):
    import vegas

    if grid is None:
        return vegas.AdaptiveMap([[0.0, 1.0]] * N_MAPPED, ninc=_NINC)
    return vegas.AdaptiveMap(grid)


def _pair_density(channel: PairChannel, amap, b: np.ndarray) -> np.ndarray:
    """G_pair(p) = ¼ Σ_π g(π p), g = 1 / (channel jacobian × VEGAS jacobian), for (N, 4, 4) b momenta."""
    density = np.zeros(len(b))
    for perm in PERMUTATIONS:
        up, jp = channel.mapped_of(b[:, perm])
        vp = np.empty_like(up)
        jvp = np.empty(len(b))
        amap.invmap(np.ascontiguousarray(up), vp, jvp)
        with np.errstate(divide="ignore"):
            density += np.where(jp > 0, 1.0 / (jp * jvp), 0.0)
    return density / len(PERMUTATIONS)


N_UNIT = 11  # ten phase-space variables and the channel choice


def _phase_space(setup: _Setup, channels, amap, alpha: float, v: np.ndarray) -> dict[str, np.ndarray]:
    """Unit points v (N, 11) → the trials inside the cuts: index k, b (K, 4, 4), x₁, x₂, and the densities.

    G = α G_pair + (1 − α) G_pT (the two channels of `phase_space`); v[:, 10] < α picks the pair channel.
    """
    pair, flat = channels
    n = len(v)
    from_pair = v[:, 10] < alpha
    b = np.zeros((n, 4, 4))
    x1, x2 = np.ones(n), np.ones(n)
    ip, iflat = np.flatnonzero(from_pair), np.flatnonzero(~from_pair)
    u = np.empty((len(ip), N_MAPPED))
    jv = np.empty(len(ip))
    amap.map(np.ascontiguousarray(v[ip, :N_MAPPED]), u, jv)
    bp, x1[ip], x2[ip], jac = pair.momenta(u)
    b[ip] = bp
    b[iflat], x1[iflat], x2[iflat] = flat.momenta(v[iflat, :10])
    reachable = np.ones(n, dtype=bool)
    reachable[ip] = jac > 0
    k = np.flatnonzero(reachable & (x1 < 1) & (x2 < 1) & passes_cuts(b, setup.cuts))
    return {"k": k, "b": b[k], "x1": x1[k], "x2": x2[k], "alpha": alpha, "channels": channels, "amap": amap}


def _densities(ps: dict, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(G, G_pair, G_pT) at the phase-space points `rows` of `ps` (computed only where a weight is needed:
    the relabelled inverse maps cost as much as the detector)."""
    pair, flat = ps["channels"]
    b = ps["b"][rows]
    g_pair = _pair_density(pair, ps["amap"], b)
    g_flat = flat.density(b)
    return ps["alpha"] * g_pair + (1 - ps["alpha"]) * g_flat, g_pair, g_flat


def _weigh(setup: _Setup, ps: dict, rows: np.ndarray | slice = slice(None), density=None):
    """w = F/G (fb per trial), the (K, 9) flavour parts and μ of the phase-space points `rows` of `ps`."""
    if density is None:
        density = _densities(ps, rows)[0]
    f, parts, mu = _integrand(ps["b"][rows], ps["x1"][rows], ps["x2"][rows], setup.sqrt_s, setup.scale)
    good = (density > 0) & np.isfinite(f)
    w = np.where(good, f / np.where(good, density, 1.0), 0.0)
    return w, np.where(good[:, None], parts, 0.0), mu


def _probe(ps: dict[str, np.ndarray], sqrt_s_tev: float) -> PartonEvents:
    """The phase-space points as unweighted PartonEvents for a detector (which reads only the b momenta)."""
    n = len(ps["k"])
    return PartonEvents(
        b=ps["b"], weight=np.zeros(n), kappa_terms=np.zeros((n, 3)), kappa=np.full(n, np.nan),
        process=np.zeros(n, dtype=np.int8), x1=ps["x1"], x2=ps["x2"], scale=np.zeros(n),
        incoming=np.full((n, 2), 21), extra=None, extra_pdg=None, higgs=None, sqrt_s_tev=float(sqrt_s_tev),
    )  # fmt: skip


def _four_tag_fast(partons: PartonEvents, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool: the fast detector's jets pass the four-tag cut (the selection a "four_tag" survey targets)."""
    from spanet2.generate.detector import fast_detector
    from spanet2.generate.selection import four_tag_mask

    return four_tag_mask(fast_detector(partons, rng))


SELECTIONS = {None: None, "four_tag": _four_tag_fast}


def _trial(
    setup: _Setup, channels, amap, alpha: float, v: np.ndarray, select=None, rng=None
) -> dict[str, np.ndarray]:
    """Weights w (N,) of unit points v (N, 11), zero outside the cuts (and outside `select`(partons, rng)
    where given: then |M|² is evaluated for the selected points only), with the channel densities."""
    n = len(v)
    ps = _phase_space(setup, channels, amap, alpha, v)
    out = {name: np.zeros(n) for name in ("w", "g_pair", "g_flat")}
    rows = np.arange(len(ps["k"]))
    if select is not None and len(rows):
        rows = np.flatnonzero(select(_probe(ps, setup.sqrt_s_tev), rng))
    if len(rows):
        density, g_pair, g_flat = _densities(ps, rows)
        out["w"][ps["k"][rows]] = _weigh(setup, ps, rows, density)[0]
        out["g_pair"][ps["k"][rows]] = g_pair
        out["g_flat"][ps["k"][rows]] = g_flat
    return out


# -- the survey ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Survey:
    """An adapted VEGAS grid and what a fresh sample on it measured."""

    grid: np.ndarray  # (10, NINC + 1) VEGAS nodes of the pair channel
    alpha: float  # the pair channel's share of the trials
    sigma_fb: float
    sigma_err_fb: float
    w_ref: float  # unweighting reference (fb per trial)
    efficiency: float  # accepted events per trial at w_ref
    n_points: int


def _reference_weight(w: np.ndarray, excess: float = 0.01) -> float:
    """The smallest w_ref whose overweight excess Σ max(w − w_ref, 0) is ≤ `excess` of Σ w."""
    pos = np.sort(w[w > 0])[::-1]
    if pos.size == 0:
        return 0.0
    # excess(t) at t = pos[k] is Σ_{i<k} pos[i] − k·pos[k]; non-decreasing in k
    cum = np.cumsum(pos)
    over = cum - np.arange(1, pos.size + 1) * pos
    k = int(np.searchsorted(over, excess * cum[-1], side="right")) - 1
    return float(pos[max(k, 0)])


def _survey_key(setup: _Setup, seed: int, iterations: int, points: int, final_points: int, select) -> str:
    key = {
        "version": _SURVEY_VERSION,
        "select": select,
        "sqrt_s_tev": setup.sqrt_s_tev,
        "cuts": asdict(setup.cuts),
        "scale": setup.scale,
        "seed": seed,
        "iterations": iterations,
        "points": points,
        "final_points": final_points,
        "vegas": [_NINC, _VEGAS_DAMPING],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=16)
def survey(
    sqrt_s_tev: float,
    cuts: GeneratorCuts = DEFAULT_CUTS,
    scale: str = "madgraph",
    *,
    select: str | None = None,
    seed: int = 20260,
    iterations: int = 8,
    points: int = 40_000,
    final_points: int = 200_000,
) -> Survey:
    """Adapt the VEGAS map (`iterations` × `points` trials), then measure σ, its error and w_ref on a fresh
    `final_points` sample. Deterministic for its arguments; cached on disk next to the artifacts.

    select: None (σ after the generator cuts) or "four_tag": the weights are w × Θ(fast detector's jets pass
    the four-tag cut), so the grid, the channel weights and w_ref adapt to the events the writer keeps and
    σ is the four-tag σ (the survey of `generate_selected_background`; any grid is exact, this one is fast).
    """
    if scale not in SCALE_CHOICES:
        raise ValueError(f"scale must be one of {SCALE_CHOICES}, got {scale!r}")
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {list(SELECTIONS)}, got {select!r}")
    setup = _Setup(float(sqrt_s_tev), cuts, scale)
    key = _survey_key(setup, seed, iterations, points, final_points, select)
    path = cache_root() / "surveys" / f"{key}.npz"
    if path.exists():
        with np.load(path) as z:
            values = (float(z[k]) for k in ("alpha", "sigma", "err", "w_ref", "eff"))
            return Survey(z["grid"], *values, int(z["n"]))
    rng = np.random.default_rng([seed, 4, int(round(sqrt_s_tev * 1000))])
    channels = setup.channels()
    amap = _vegas_map(None)
    alpha = 0.5
    selection = SELECTIONS[select]
    points = points * (4 if select else 1)  # the selection keeps a few % of the points: more, but cheap ones
    final_points = final_points * (4 if select else 1)
    for it in range(iterations):
        v = rng.random((points, N_UNIT))
        t = _trial(setup, channels, amap, alpha, v, selection, rng)
        w = t["w"]
        pair = v[:, 10] < alpha
        amap.add_training_data(np.ascontiguousarray(v[pair, :N_MAPPED]), w[pair] ** 2)
        amap.adapt(alpha=_VEGAS_DAMPING)
        # multichannel weights (Kleiss–Pittau): α_c ∝ α_c √⟨w² g_c / G⟩
        g = alpha * t["g_pair"] + (1 - alpha) * t["g_flat"]
        with np.errstate(divide="ignore", invalid="ignore"):
            d_pair = np.nanmean(np.where(g > 0, w**2 * t["g_pair"] / g, 0.0))
            d_flat = np.nanmean(np.where(g > 0, w**2 * t["g_flat"] / g, 0.0))
        a, c = alpha * np.sqrt(d_pair), (1 - alpha) * np.sqrt(d_flat)
        if a + c > 0:
            alpha = float(np.clip(a / (a + c), 0.05, 0.95))
        logger.info("survey %g TeV iteration %d: σ = %.4g fb, α_pair = %.3f", sqrt_s_tev, it, w.mean(), alpha)
    ws = []
    for _ in range(max(final_points // 50_000, 1)):
        v = rng.random((min(final_points, 50_000), N_UNIT))
        ws.append(_trial(setup, channels, amap, alpha, v, selection, rng)["w"])
    w = np.concatenate(ws)
    w_ref = _reference_weight(w)
    result = Survey(
        np.array(amap.grid, dtype=np.float64),
        alpha,
        float(w.mean()),
        float(w.std() / np.sqrt(w.size)),
        w_ref,
        float(np.minimum(w / w_ref, 1.0).mean()) if w_ref > 0 else 0.0,
        int(w.size),
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            grid=result.grid,
            alpha=result.alpha,
            sigma=result.sigma_fb,
            err=result.sigma_err_fb,
            w_ref=result.w_ref,
            eff=result.efficiency,
            n=result.n_points,
        )
    logger.info(
        "survey %g TeV: σ = %.4g ± %.2g fb, unweighting efficiency %.3g",
        sqrt_s_tev,
        result.sigma_fb,
        result.sigma_err_fb,
        result.efficiency,
    )
    return result


def exact_cross_section(sqrt_s_tev: float, cuts: GeneratorCuts = DEFAULT_CUTS, scale: str = "madgraph"):
    """(σ, MC error) in fb of pp → bb̄bb̄ after the generator cuts (the survey's fresh sample)."""
    s = survey(float(sqrt_s_tev), cuts, scale)
    return s.sigma_fb, s.sigma_err_fb


def _partons(ps, rows, w, parts, mu, weight, sqrt_s_tev: float, rng: np.random.Generator) -> PartonEvents:
    """PartonEvents of the phase-space points `rows` with their weights (fb); incoming partons drawn in
    proportion to each flavour's share of the event's PDFs × |M|²; b leading pT first with b_pdg."""
    n = len(w)
    b = ps["b"][rows] if n else np.zeros((0, 4, 4))
    cum = np.cumsum(parts, axis=1)
    pick = (cum < rng.random(n)[:, None] * cum[:, -1:]).sum(axis=1).clip(0, len(INCOMING) - 1)
    order = np.argsort(-np.hypot(b[..., 1], b[..., 2]), axis=1)  # leading pT first
    b_pdg = np.take_along_axis(np.broadcast_to(_B_PDG, (n, 4)), order, axis=1)
    return PartonEvents(
        b=np.take_along_axis(b, order[..., None], axis=1),
        weight=np.asarray(weight, dtype=np.float64),
        kappa_terms=np.zeros((n, 3)),
        kappa=np.full(n, np.nan),
        process=np.zeros(n, dtype=np.int8),
        x1=ps["x1"][rows] if n else np.zeros(0),
        x2=ps["x2"][rows] if n else np.zeros(0),
        scale=mu,
        incoming=INCOMING[pick],
        extra=None,
        extra_pdg=None,
        higgs=None,
        sqrt_s_tev=float(sqrt_s_tev),
        b_pdg=np.ascontiguousarray(b_pdg, dtype=np.int64),
    )


def generate_exact_background_partons(
    n_events: int,
    *,
    sqrt_s_tev: float,
    rng: np.random.Generator,
    cuts: GeneratorCuts = DEFAULT_CUTS,
    scale: str = "madgraph",
    batch_size: int = 20_000,
) -> PartonEvents:
    """N QCD 4b parton events at exact LO passing the generator cuts, unweighted (see the module docstring).

    Σ weight = the survey's σ (fb); b is (N, 4, 4) leading pT first with `b_pdg` (N, 4) = ±5.
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    s = survey(float(sqrt_s_tev), cuts, scale)
    setup = _Setup(float(sqrt_s_tev), cuts, scale)
    channels = setup.channels()
    amap = _vegas_map(s.grid)
    parts: list[PartonEvents] = []
    n_have = 0
    while n_have < n_events and s.w_ref > 0:
        ps = _phase_space(setup, channels, amap, s.alpha, rng.random((batch_size, N_UNIT)))
        w, flavours, mu = _weigh(setup, ps)
        keep = np.flatnonzero(rng.random(w.size) < np.minimum(w / s.w_ref, 1.0))
        parts.append(_partons(ps, keep, w[keep], flavours[keep], mu[keep], np.maximum(w[keep], s.w_ref),
                              sqrt_s_tev, rng))  # fmt: skip
        n_have += len(keep)
    if not parts:
        ps = {"b": np.zeros((0, 4, 4)), "x1": np.zeros(0), "x2": np.zeros(0)}
        parts = [_partons(ps, slice(0, 0), np.zeros(0), np.zeros((0, 9)), np.zeros(0), np.zeros(0),
                          sqrt_s_tev, rng)]  # fmt: skip
    events = PartonEvents.concat(parts).take(np.arange(min(n_have, n_events)))
    if len(events):
        events.weight = events.weight / events.weight.sum() * s.sigma_fb
    return events


def four_tag_selection(jets) -> np.ndarray:
    """The four-tag cut as `generate_selected_background`'s `select` (it then uses the four-tag survey)."""
    from spanet2.generate.selection import four_tag_mask

    return four_tag_mask(jets)


def generate_selected_background(
    n_trials: int,
    *,
    sqrt_s_tev: float,
    rng: np.random.Generator,
    detector,
    select,
    cuts: GeneratorCuts = DEFAULT_CUTS,
    scale: str = "madgraph",
    batch_size: int = 50_000,
):
    """`n_trials` trials → generator cuts → `detector` → `select` → |M|² → unweighting, batch by batch.

    Yields (partons, jets, trial index) of the accepted events of each batch. Because the detector's
    randomness does not depend on the weight, running it before the matrix element and unweighting only
    the selected events gives the same events as generating, unweighting and then selecting — at a small
    fraction of the |M|² evaluations. Weights: max(w, w_ref) / n_trials (fb), so Σ over everything
    yielded estimates σ × selection efficiency without bias. With `select=four_tag_selection` and the fast
    detector the grid and w_ref come from the four-tag survey (adapted to the selected events); any other
    selection uses the generator-cut survey.
    """
    s = survey(float(sqrt_s_tev), cuts, scale, select="four_tag" if select is four_tag_selection else None)
    setup = _Setup(float(sqrt_s_tev), cuts, scale)
    channels = setup.channels()
    amap = _vegas_map(s.grid)
    for start in range(0, n_trials, batch_size):
        size = min(batch_size, n_trials - start)
        ps = _phase_space(setup, channels, amap, s.alpha, rng.random((size, N_UNIT)))
        jets = detector(_probe(ps, sqrt_s_tev), rng)
        sel = np.flatnonzero(select(jets))
        w, flavours, mu = _weigh(setup, ps, sel)
        keep = (
            rng.random(len(sel)) < np.minimum(w / s.w_ref, 1.0) if s.w_ref > 0 else np.zeros(len(sel), bool)
        )
        rows = sel[keep]
        weight = np.maximum(w[keep], s.w_ref) / n_trials
        partons = _partons(ps, rows, w[keep], flavours[keep], mu[keep], weight, sqrt_s_tev, rng)
        # the detector ran on the unordered b's: its jets stay valid (jets do not refer to parton order)
        yield partons, jets.take(rows), start + ps["k"][rows]
