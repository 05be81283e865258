"""2 → 4 phase space for pp → bb̄bb̄: a two-pair channel, its inverse, and the b-label multichannel.

The channel factorises the measure as the nested two-body decays of two b b̄ pairs (the g* → bb̄
splittings that dominate QCD 4b):

    dx₁ dx₂ dΦ₄ = dτ dy · dΦ₂(√ŝ; m₁₂, m₃₄) · dm²₁₂/2π · dm²₃₄/2π · dΦ₂(m₁₂; m_b, m_b) · dΦ₂(m₃₄; m_b, m_b)

with dΦ₂(M; m_a, m_b) = |p*| / (16π² M) dcosθ dφ. Ten unit variables u map to
(τ, y, m²₁₂, m²₃₄, cosθ | φ, cosθ₁, φ₁, cosθ₂, φ₂): τ and the pair masses log-uniform (the collinear
1/m² of g* → bb̄), cosθ of the pair axis peaked forward and backward (the t-channel gluon), the rest
uniform. The first five ("mapped") variables can be adapted further (VEGAS, `exact_background`), so the
channel also inverts them: `mapped_of(momenta)` returns them for any four-b momenta.

Identical particles: |M|² is symmetric under b₁ ↔ b₂ and b̄₁ ↔ b̄₂, the channel is not (it pairs b₁ with
b̄₁). `PERMUTATIONS` are the four relabellings; the multichannel density G(p) = ¼ Σ_π g(π p) is symmetric,
so sampling the channel as it is with weight F/G is exact (∫ g F/G = ∫ ¼ Σ_π g∘π F/G = ∫ F).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GeneratorCuts", "PairChannel", "PtChannel", "PERMUTATIONS", "passes_cuts"]

PERMUTATIONS = np.array([[0, 1, 2, 3], [2, 1, 0, 3], [0, 3, 2, 1], [2, 3, 0, 1]])  # of (b1, b̄1, b2, b̄2)
N_DIM = N_MAPPED = 10  # all ten variables can be adapted (and inverted)


@dataclass(frozen=True)
class GeneratorCuts:
    """Parton-level cuts on the four b quarks: pT > min_pt (GeV), |η| < max_eta, ΔR(any two) > min_dr."""

    min_pt: float = 30.0
    max_eta: float = 2.5
    min_dr: float = 0.3

    def __post_init__(self) -> None:
        if not (self.min_pt > 0 and self.max_eta > 0 and self.min_dr >= 0):
            raise ValueError(f"generator cuts need min_pt > 0, max_eta > 0, min_dr >= 0, got {self}")


def _mass2(p: np.ndarray) -> np.ndarray:
    return p[..., 0] ** 2 - (p[..., 1:] ** 2).sum(axis=-1)


def _kallen_sqrt(a, b, c) -> np.ndarray:
    return np.sqrt(np.maximum(a * a + b * b + c * c - 2 * (a * b + a * c + b * c), 0.0))


def passes_cuts(b: np.ndarray, cuts: GeneratorCuts) -> np.ndarray:
    """(N,) bool for (N, 4, 4) b momenta: every b passes pT and |η|, every pair ΔR."""
    pt = np.hypot(b[..., 1], b[..., 2])  # (N, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(b[..., 3] / np.maximum(pt, 1e-300))
    ok = ((pt > cuts.min_pt) & (np.abs(eta) < cuts.max_eta)).all(axis=1)
    if cuts.min_dr > 0:
        phi = np.arctan2(b[..., 2], b[..., 1])
        i, j = np.triu_indices(4, 1)
        dphi = np.abs(phi[:, i] - phi[:, j])
        dphi = np.minimum(dphi, 2 * np.pi - dphi)
        dr2 = (eta[:, i] - eta[:, j]) ** 2 + dphi**2  # (N, 6)
        ok &= (dr2 > cuts.min_dr**2).all(axis=1)
    return ok


def _cos_map(u: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cosθ with density ∝ 1/(a² − c²) on [−1, 1] (peaks at ±1 of width a − 1), and dc/du."""
    h = np.arctanh(1.0 / a)
    c = a * np.tanh((2 * u - 1) * h)
    return c, (a * a - c * c) * 2 * h / a


def _cos_inverse(c: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.arctanh(1.0 / a)
    return 0.5 * (np.arctanh(np.clip(c / a, -1 + 1e-16, 1 - 1e-16)) / h + 1), (a * a - c * c) * 2 * h / a


def _boost_z(p: np.ndarray, rapidity: np.ndarray) -> np.ndarray:
    """Boost (..., 4) momenta along z by `rapidity` (broadcast over the leading axes)."""
    ch, sh = np.cosh(rapidity), np.sinh(rapidity)
    out = p.copy()
    out[..., 0] = ch * p[..., 0] + sh * p[..., 3]
    out[..., 3] = sh * p[..., 0] + ch * p[..., 3]
    return out


def _boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost (N, 4) rest-frame momenta by velocity (N, 3)."""
    b2 = np.maximum((beta**2).sum(axis=1), 1e-300)
    gamma = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-300))
    bp = (beta * p[:, 1:]).sum(axis=1)
    e = gamma * (p[:, 0] + bp)
    vec = p[:, 1:] + ((gamma - 1.0) * bp / b2 + gamma * p[:, 0])[:, None] * beta
    return np.concatenate([e[:, None], vec], axis=1)


def _helicity_axes(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n̂, ê₁, ê₂) (N, 3) each: the parent's flight direction and two axes perpendicular to it (ê₁ ∝ ẑ × n̂)."""
    vec = parent[:, 1:]
    n = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-300)  # (N, 3)
    e1 = np.cross(np.array([0.0, 0.0, 1.0]), n)
    small = np.linalg.norm(e1, axis=1) < 1e-12
    e1[small] = np.array([1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return n, e1, np.cross(n, e1)


def _decay_angles(parent: np.ndarray, daughter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `_decay`: (cosθ, φ ∈ [0, 2π)) of `daughter` (N, 4) in the `parent` (N, 4) rest frame."""
    n, e1, e2 = _helicity_axes(parent)
    rest = _boost(daughter, -parent[:, 1:] / parent[:, :1])
    d = rest[:, 1:] / np.maximum(np.linalg.norm(rest[:, 1:], axis=1, keepdims=True), 1e-300)
    cos_t = np.clip((d * n).sum(axis=1), -1.0, 1.0)
    return cos_t, np.mod(np.arctan2((d * e2).sum(axis=1), (d * e1).sum(axis=1)), 2 * np.pi)


def _decay(parent: np.ndarray, m_parent: np.ndarray, m: float, cos_t, phi) -> tuple[np.ndarray, np.ndarray]:
    """Two-body decay of (N, 4) `parent` into two mass-m daughters at (θ, φ) about the parent's flight
    direction (helicity frame, azimuth from ẑ × n̂). Returns the lab momenta (N, 4) of both."""
    vec = parent[:, 1:]
    n, e1, e2 = _helicity_axes(parent)
    sin_t = np.sqrt(np.maximum(1 - cos_t**2, 0.0))
    d = cos_t[:, None] * n + sin_t[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    k = 0.5 * np.sqrt(np.maximum(m_parent**2 - 4 * m * m, 0.0))
    e = 0.5 * m_parent
    beta = vec / parent[:, :1]
    first = np.concatenate([e[:, None], k[:, None] * d], axis=1)
    second = np.concatenate([e[:, None], -k[:, None] * d], axis=1)
    return _boost(first, beta), _boost(second, beta)


class PairChannel:
    """The two-pair channel at √s (GeV) for b mass m_b and the generator cuts (which bound its ranges)."""

    def __init__(self, sqrt_s: float, m_b: float, cuts: GeneratorCuts):
        self.s = float(sqrt_s) ** 2
        self.m_b = float(m_b)
        self.cuts = cuts
        mt_min = np.hypot(cuts.min_pt, m_b)
        self.tau_min = (4 * mt_min) ** 2 / self.s  # ŝ ≥ (Σ m_T)² ≥ (4 m_T,min)²
        # a pair of b's with pT > min_pt and ΔR > min_dr has m² ≥ 2m² + 2 pT₁pT₂(cosh Δy − cos Δφ) ≳ ...
        m2_lo = max(4 * m_b**2, 2 * m_b**2 + 0.95 * (cuts.min_pt * cuts.min_dr) ** 2)
        if m2_lo <= 0:
            raise ValueError("massless b quarks need a ΔR cut (min_dr > 0): the collinear g → bb̄ diverges")
        self.m_lo = np.sqrt(m2_lo) * (1 - 1e-9)

    # -- the mapped variables --------------------------------------------------------------------------------
    def _log_map(self, u, lo, hi):
        ratio = np.log(hi**2 / lo**2)
        m2 = lo**2 * np.exp(u * ratio)
        return m2, m2 * ratio  # m², dm²/du

    def _production_a(self, w: np.ndarray, p_star: np.ndarray) -> np.ndarray:
        return 1.0 + np.clip(0.5 * (self.cuts.min_pt / np.maximum(p_star, 1e-9)) ** 2, 1e-4, 10.0)

    def _jacobian(self, tau, m12, m34, p_star, dm12, dm34, dcos) -> np.ndarray:
        """dτ dy dΦ₄ per unit of u (all ten u's), given the sampled values."""
        w = np.sqrt(tau * self.s)
        y_max = -0.5 * np.log(tau)
        k12 = 0.5 * np.sqrt(np.maximum(m12**2 - 4 * self.m_b**2, 0.0))
        k34 = 0.5 * np.sqrt(np.maximum(m34**2 - 4 * self.m_b**2, 0.0))
        two_pi = 2 * np.pi
        return (
            tau * (-np.log(self.tau_min))  # dτ/du₀
            * 2 * y_max  # dy/du₁
            * dm12 / two_pi
            * dm34 / two_pi
            * p_star / (16 * np.pi**2 * w) * dcos * two_pi
            * k12 / (16 * np.pi**2 * m12) * 4 * np.pi
            * k34 / (16 * np.pi**2 * m34) * 4 * np.pi
        )  # fmt: skip

    def momenta(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(N, 10) unit variables → b momenta (N, 4, 4) [b₁, b̄₁, b₂, b̄₂] (lab), x₁, x₂, jacobian (N,).

        The jacobian is zero where the point is outside the channel (m₁₂ + m₃₄ ≥ √ŝ cannot happen by
        construction; a zero marks numerical edge cases)."""
        u = np.asarray(u, dtype=np.float64)
        tau = self.tau_min ** (1.0 - u[:, 0])
        y = -0.5 * np.log(tau) * (2 * u[:, 1] - 1)
        w = np.sqrt(tau * self.s)
        m12_2, dm12 = self._log_map(u[:, 2], self.m_lo, w - self.m_lo)
        m12 = np.sqrt(m12_2)
        m34_2, dm34 = self._log_map(u[:, 3], self.m_lo, np.maximum(w - m12, self.m_lo * (1 + 1e-12)))
        m34 = np.sqrt(m34_2)
        p_star = _kallen_sqrt(w * w, m12_2, m34_2) / (2 * w)
        cos_t, dcos = _cos_map(u[:, 4], self._production_a(w, p_star))
        phi = 2 * np.pi * u[:, 5]
        sin_t = np.sqrt(np.maximum(1 - cos_t**2, 0.0))
        direction = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)  # (N, 3)
        e12 = (w * w + m12_2 - m34_2) / (2 * w)
        q12 = np.concatenate([e12[:, None], p_star[:, None] * direction], axis=1)  # (N, 4), CM frame
        q34 = np.concatenate([(w - e12)[:, None], -p_star[:, None] * direction], axis=1)
        b1, bb1 = _decay(q12, m12, self.m_b, 2 * u[:, 6] - 1, 2 * np.pi * u[:, 7])
        b2, bb2 = _decay(q34, m34, self.m_b, 2 * u[:, 8] - 1, 2 * np.pi * u[:, 9])
        b = _boost_z(np.stack([b1, bb1, b2, bb2], axis=1), y[:, None])  # (N, 4, 4)
        jac = self._jacobian(tau, m12, m34, p_star, dm12, dm34, dcos)
        jac = np.where((w - m12 > self.m_lo) & np.isfinite(jac), jac, 0.0)
        sqrt_tau = np.sqrt(tau)
        return b, sqrt_tau * np.exp(y), sqrt_tau * np.exp(-y), jac

    def mapped_of(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ten unit variables (N, 10) of (N, 4, 4) b momenta and the jacobian (N,) there: the inverse
        of `momenta`; points the channel cannot reach get jacobian 0."""
        total = b.sum(axis=1)  # (N, 4)
        shat = _mass2(total)
        tau = shat / self.s
        y = 0.5 * np.log((total[:, 0] + total[:, 3]) / (total[:, 0] - total[:, 3]))
        w = np.sqrt(np.maximum(shat, 0.0))
        q12 = _boost_z(b[:, 0] + b[:, 1], -y)  # (N, 4) in the CM frame
        m12_2 = _mass2(q12)
        m34_2 = _mass2(b[:, 2] + b[:, 3])
        m12, m34 = np.sqrt(np.maximum(m12_2, 0.0)), np.sqrt(np.maximum(m34_2, 0.0))
        p_star = _kallen_sqrt(shat, m12_2, m34_2) / (2 * w)
        cos_t = q12[:, 3] / np.maximum(np.linalg.norm(q12[:, 1:], axis=1), 1e-300)
        hi12 = w - self.m_lo
        hi34 = np.maximum(w - m12, self.m_lo * (1 + 1e-12))
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.stack(
                [
                    1.0 - np.log(tau) / np.log(self.tau_min),
                    0.5 * (y / (-0.5 * np.log(tau)) + 1),
                    np.log(m12_2 / self.m_lo**2) / np.log(hi12**2 / self.m_lo**2),
                    np.log(m34_2 / self.m_lo**2) / np.log(hi34**2 / self.m_lo**2),
                    np.zeros_like(tau),
                    np.mod(np.arctan2(q12[:, 2], q12[:, 1]), 2 * np.pi) / (2 * np.pi),
                    *(np.zeros_like(tau) for _ in range(4)),
                ],
                axis=1,
            )
            cm = _boost_z(b, -y[:, None])  # (N, 4, 4) in the CM frame
            for col, (parent, daughter) in (
                (6, (cm[:, 0] + cm[:, 1], cm[:, 0])),
                (8, (cm[:, 2] + cm[:, 3], cm[:, 2])),
            ):
                cos_d, phi_d = _decay_angles(parent, daughter)
                u[:, col], u[:, col + 1] = 0.5 * (cos_d + 1), phi_d / (2 * np.pi)
            u[:, 4], dcos = _cos_inverse(cos_t, self._production_a(w, p_star))
            dm12 = m12_2 * np.log(hi12**2 / self.m_lo**2)
            dm34 = m34_2 * np.log(hi34**2 / self.m_lo**2)
            jac = self._jacobian(tau, m12, m34, p_star, dm12, dm34, dcos)
        inside = np.all((u >= 0) & (u <= 1), axis=1) & (tau > self.tau_min) & np.isfinite(jac) & (hi12 > m12)
        return np.clip(np.nan_to_num(u), 0.0, 1.0), np.where(inside, jac, 0.0)


class PtChannel:
    """Three b's drawn in (pT, φ, y) above the cuts, the fourth recoiling in pT with its own y.

        dx₁ dx₂ dΦ₄ = (2π)⁻⁸ 2⁻⁴ (2/s) Π_{i≤3} pT_i dpT_i dφ_i dy_i · dy₄,   pT₄ = −Σ_{i≤3} pT_i

    pT_i ∝ pT^−POWER above min_pt, φ and |y| < max_eta uniform (|y| ≤ |η| for a massive b, so the η
    cut is covered). This channel holds the events where all four b's sit near the pT cut at small ŝ,
    which the pair channel reaches rarely. `density` is symmetric in the four b's (the recoiler is
    averaged over), so it needs no relabelling.
    """

    POWER = 4.0

    def __init__(self, sqrt_s: float, m_b: float, cuts: GeneratorCuts):
        self.s = float(sqrt_s) ** 2
        self.m_b = float(m_b)
        self.cuts = cuts
        self.y_max = cuts.max_eta
        self._norm = (2 * np.pi) ** -8 * 2.0**-4 * (2.0 / self.s)

    def _pt_density(self, pt: np.ndarray) -> np.ndarray:
        lo, k = self.cuts.min_pt, self.POWER
        return np.where(pt > lo, (k - 1) / lo * (pt / lo) ** -k, 0.0)

    def momenta(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 10) unit variables → b momenta (N, 4, 4) [b₁, b̄₁, b₂, b̄₂], x₁, x₂ (the recoiler is b̄₂)."""
        u = np.asarray(u, dtype=np.float64)
        lo, k = self.cuts.min_pt, self.POWER
        pt = lo * (1.0 - u[:, 0:3]) ** (-1.0 / (k - 1))  # (N, 3)
        phi = 2 * np.pi * u[:, 3:6]
        y = self.y_max * (2 * u[:, 6:10] - 1)  # (N, 4)
        px = np.concatenate([pt * np.cos(phi), -(pt * np.cos(phi)).sum(axis=1, keepdims=True)], axis=1)
        py = np.concatenate([pt * np.sin(phi), -(pt * np.sin(phi)).sum(axis=1, keepdims=True)], axis=1)
        mt = np.sqrt(px**2 + py**2 + self.m_b**2)
        b = np.stack([mt * np.cosh(y), px, py, mt * np.sinh(y)], axis=-1)  # (N, 4, 4)
        total = b.sum(axis=1)
        root_s = np.sqrt(self.s)
        return b, (total[:, 0] + total[:, 3]) / root_s, (total[:, 0] - total[:, 3]) / root_s

    def density(self, b: np.ndarray) -> np.ndarray:
        """(N,) sampling density of (N, 4, 4) b momenta w.r.t. dx₁ dx₂ dΦ₄, averaged over the recoiler."""
        pt = np.hypot(b[..., 1], b[..., 2])  # (N, 4)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = 0.5 * np.log((b[..., 0] + b[..., 3]) / (b[..., 0] - b[..., 3]))
        inside = (np.abs(y) < self.y_max).all(axis=1)
        per = self._pt_density(pt) / (2 * np.pi * 2 * self.y_max * np.maximum(pt, 1e-300))  # (N, 4)
        mean = 0.25 * sum(np.prod(np.delete(per, r, axis=1), axis=1) for r in range(4))  # ¼ Σ_r Π_{i≠r}
        return np.where(inside, mean / (2 * self.y_max) / self._norm, 0.0)
