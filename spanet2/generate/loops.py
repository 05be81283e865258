"""Scalar one-loop integrals C0 and D0 with equal internal masses: analytic, plus a numerical cross-check."""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy.special import spence

__all__ = [
    "c0",
    "c0_numeric",
    "d0",
    "d0_numeric",
    "li2",
    "c0_00s",
    "c0_0pq",
    "triangle_f",
]

logger = logging.getLogger(__name__)

# Conventions (LoopTools / Denner): with propagators D_i = (q + r_i)^2 - m^2 + i eps,
#   C0 = ∫ d^4q / (i π^2) 1 / (D_0 D_1 D_2)      = -∫_simplex dx 1 / Δ(x)
#   D0 = ∫ d^4q / (i π^2) 1 / (D_0 D_1 D_2 D_3)  = +∫_simplex dx 1 / Δ(x)^2
# with Δ(x) = m^2 - Σ_{i<j} x_i x_j (r_i - r_j)^2 - i eps on the simplex Σ x_i = 1.
# c0 / d0 (used by the matrix element) are analytic: 't Hooft–Veltman C0 and the Denner–Nierste–Scharf D0
# with complex dilogarithms and η functions (bottom of this file); c0_00s / c0_0pq are closed forms.
# c0_numeric / d0_numeric are an independent route used by the tests: Feynman-parameter quadrature where
# physical kinematics (invariants above thresholds) are handled by deforming the integration contour into
# the complex plane, z = u - i λ u (1 - u) ∂Δ/∂u (cube variables u), which gives Im Δ(z) < 0 as the -i eps
# prescription requires; the deformation is exact (Cauchy), so no eps -> 0 extrapolation is needed.

_LAMBDA = 2.0  # deformation strength λ = _LAMBDA / max(1, max|invariant/m²|)**_LAMBDA_POWER
_LAMBDA_POWER = 0.75
_ENDPOINT_POWER = 1  # node-crowding power k of the cube map (1 = plain Gauss-Legendre: best tested)
_FD_STEP = 1e-6  # finite-difference step (cube variables) for the deformation Jacobian
_CHUNK_NODES = 2_000_000  # kinematic points × quadrature nodes per vectorised block (memory bound)


@lru_cache(maxsize=16)
def _cube_rule(n_nodes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss–Legendre rule on [0, 1]^dim after the map u = t^k / (t^k + (1-t)^k): nodes (K, dim), weights (K,).

    The map (k = _ENDPOINT_POWER) crowds the nodes towards the faces of the cube, where the integrands of
    C0/D0 at large invariants concentrate (log² endpoint behaviour) and where the deformation vanishes.
    """
    k = _ENDPOINT_POWER
    t, w = np.polynomial.legendre.leggauss(n_nodes)
    t = 0.5 * (t + 1.0)
    w = 0.5 * w
    a, b = t**k, (1.0 - t) ** k
    x = a / (a + b)
    w = w * k * (t * (1.0 - t)) ** (k - 1) / (a + b) ** 2  # du/dt
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=-1)  # (K, dim)
    weights = np.prod(np.stack([g.ravel() for g in wgrids], axis=-1), axis=-1)  # (K,)
    return nodes, weights


def _simplex_map(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map cube variables u (..., d) onto the d-simplex: x (..., d+1) with Σx = 1, and the Jacobian (...)."""
    d = u.shape[-1]
    xs = []
    rest = np.ones(u.shape[:-1], dtype=u.dtype)
    jac = np.ones(u.shape[:-1], dtype=u.dtype)
    for k in range(d):
        xs.append(rest * u[..., k])
        jac = jac * (1.0 - u[..., k]) ** (d - 1 - k)
        rest = rest * (1.0 - u[..., k])
    xs.append(rest)
    return np.stack(xs, axis=-1), jac


def _delta(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Δ(x) = 1 - Σ_{i<j} Y_ij x_i x_j (mass scaled to 1): x (P, K, n), y (P, n, n) symmetric, zero diagonal."""
    return 1.0 - 0.5 * np.einsum("pki,pij,pkj->pk", x, y, x)


def _delta_grad_u(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂Δ/∂u (P, K, d) at real cube points u (P, K, d) (chain rule through the simplex map)."""
    d = u.shape[-1]
    x, _ = _simplex_map(u)  # (P, K, d+1)
    dd_dx = -np.einsum("pij,pkj->pki", y, x)  # (P, K, d+1)
    grad = np.zeros_like(u)
    # x_k = R_k u_k (k < d), x_d = R_d, R_k = Π_{l<k} (1 - u_l):
    # ∂x_k/∂u_l = R_k δ_kl (k < d) ; = -x_k / (1 - u_l) for l < k.
    one_minus = 1.0 - u
    for l in range(d):
        g = dd_dx[..., l] * (x[..., l] / u[..., l])  # R_l = x_l / u_l (u never 0 at Gauss nodes)
        for k in range(l + 1, d + 1):
            g = g - dd_dx[..., k] * x[..., k] / one_minus[..., l]
        grad[..., l] = g
    return grad


def _deformed(u: np.ndarray, y: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Deformed contour z = u - i λ u (1 - u) ∂Δ/∂u: u (P, K, d) real, lam (P,) -> z (P, K, d) complex."""
    grad = _delta_grad_u(u, y)
    return u - 1j * lam[:, None, None] * u * (1.0 - u) * grad


def _integrate(y: np.ndarray, power: int, n_nodes: int) -> np.ndarray:
    """∫_simplex dx Δ(x)^-power for scaled invariant matrices y (P, n, n); complex (P,)."""
    n = y.shape[-1]
    dim = n - 1
    nodes, weights = _cube_rule(n_nodes, dim)
    k = len(nodes)
    out = np.empty(len(y), dtype=np.complex128)
    chunk = max(1, _CHUNK_NODES // (k * (2 * dim + 1)))
    for start in range(0, len(y), chunk):
        yc = y[start : start + chunk]
        p = len(yc)
        scale = np.maximum(1.0, np.abs(yc).max(axis=(1, 2)))  # (P,)
        lam = np.where(
            (yc > 0).any(axis=(1, 2)), _LAMBDA / scale**_LAMBDA_POWER, 0.0
        )  # no deformation at Euclidean points
        u = np.broadcast_to(nodes, (p, k, dim))  # (P, K, d)
        result = None
        todo = np.arange(p)
        for _attempt in range(8):
            yt, ut, lt = yc[todo], u[todo], lam[todo]
            z = _deformed(ut, yt, lt)  # (P, K, d)
            # Jacobian ∂z/∂u by central differences (z is a polynomial map; error O(h^2))
            jac_def = np.empty(z.shape + (dim,), dtype=np.complex128)  # (P, K, d, d)
            for l in range(dim):
                shift = np.zeros(dim)
                shift[l] = _FD_STEP
                jac_def[..., l] = (_deformed(ut + shift, yt, lt) - _deformed(ut - shift, yt, lt)) / (
                    2 * _FD_STEP
                )
            det = np.linalg.det(jac_def) if dim > 1 else jac_def[..., 0, 0]
            x, jac_simplex = _simplex_map(z)
            delta = _delta(x, yt.astype(np.complex128))  # (P, K)
            # the contour is valid only where Im Δ ≤ 0 everywhere; otherwise shrink λ and redo those points
            bad = (delta.imag > 1e-12 * np.abs(delta)).any(axis=1)
            value = np.einsum("pk,k->p", jac_simplex * det / delta**power, weights)
            if result is None:
                result = value
            else:
                result[todo] = value
            if not bad.any():
                break
            todo = todo[bad]
            lam[todo] *= 0.5
        else:
            logger.warning("contour deformation kept Im Δ > 0 at %d points", len(todo))
        out[start : start + p] = result
    return out


def _as_arrays(*args) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*args)]


def c0_numeric(
    p1sq: npt.ArrayLike, p2sq: npt.ArrayLike, p3sq: npt.ArrayLike, m2: npt.ArrayLike, *, n_nodes: int = 48
) -> np.ndarray:
    """C0(p1², p2², p3²; m, m, m) (GeV⁻²) by contour-deformed Feynman-parameter quadrature (test reference).

    Invariants in GeV² (broadcastable arrays); p3² = (p1 + p2)². Feynman prescription m² - i ε.
    Returns complex array of the broadcast shape. Accuracy ~1e-8 relative at the default ``n_nodes``
    away from thresholds.
    """
    p1sq, p2sq, p3sq, m2 = _as_arrays(p1sq, p2sq, p3sq, m2)
    shape = p1sq.shape
    y = np.zeros(shape + (3, 3))  # (…, 3, 3) scaled invariants (r_i - r_j)^2 / m^2
    y[..., 0, 1] = y[..., 1, 0] = p1sq / m2
    y[..., 1, 2] = y[..., 2, 1] = p2sq / m2
    y[..., 0, 2] = y[..., 2, 0] = p3sq / m2
    val = -_integrate(y.reshape(-1, 3, 3), power=1, n_nodes=n_nodes)  # (P,)
    return (val / m2.ravel()).reshape(shape)


def d0_numeric(
    p1sq: npt.ArrayLike,
    p2sq: npt.ArrayLike,
    p3sq: npt.ArrayLike,
    p4sq: npt.ArrayLike,
    s12: npt.ArrayLike,
    s23: npt.ArrayLike,
    m2: npt.ArrayLike,
    *,
    n_nodes: int = 24,
) -> np.ndarray:
    """D0(p1², p2², p3², p4²; s12, s23; m, m, m, m) (GeV⁻⁴) by contour-deformed Feynman-parameter quadrature.

    Slow and accurate to ~1e-6 only at moderate invariants; the reference for :func:`d0` in tests.

    s12 = (p1 + p2)², s23 = (p2 + p3)²; all in GeV² (broadcastable). Feynman prescription m² - i ε.
    Returns a complex array of the broadcast shape.
    """
    p1sq, p2sq, p3sq, p4sq, s12, s23, m2 = _as_arrays(p1sq, p2sq, p3sq, p4sq, s12, s23, m2)
    shape = p1sq.shape
    y = np.zeros(shape + (4, 4))  # (…, 4, 4)
    for (i, j), v in {
        (0, 1): p1sq,
        (1, 2): p2sq,
        (2, 3): p3sq,
        (0, 3): p4sq,
        (0, 2): s12,
        (1, 3): s23,
    }.items():
        y[..., i, j] = y[..., j, i] = v / m2
    val = _integrate(y.reshape(-1, 4, 4), power=2, n_nodes=n_nodes)
    return (val / m2.ravel() ** 2).reshape(shape)


def triangle_f(tau: npt.ArrayLike) -> np.ndarray:
    """The triangle function f(τ) (complex): arcsin²(1/√τ) for τ ≥ 1, -¼[ln((1+√(1-τ))/(1-√(1-τ))) - iπ]² else."""
    tau = np.asarray(tau, dtype=np.float64)
    out = np.empty(tau.shape, dtype=np.complex128)
    above = tau >= 1.0
    out[above] = np.arcsin(1.0 / np.sqrt(tau[above])) ** 2
    b = np.sqrt(1.0 - tau[~above])
    out[~above] = -0.25 * (np.log((1.0 + b) / (1.0 - b)) - 1j * np.pi) ** 2
    return out


def c0_00s(s: npt.ArrayLike, m2: npt.ArrayLike) -> np.ndarray:
    """Closed form C0(0, 0, s; m) = -(2/s) f(4m²/s) (GeV⁻²), valid for s of either sign (s ≠ 0)."""
    s, m2 = _as_arrays(s, m2)
    out = np.empty(s.shape, dtype=np.complex128)
    pos = s > 0
    out[pos] = -2.0 / s[pos] * triangle_f(4.0 * m2[pos] / s[pos])
    # s < 0: f continues to -¼ ln²((√(1-τ)+1)/(√(1-τ)-1)) with τ < 0 (real)
    b = np.sqrt(1.0 - 4.0 * m2[~pos] / s[~pos])
    out[~pos] = -2.0 / s[~pos] * (-0.25 * np.log((b + 1.0) / (b - 1.0)) ** 2)
    return out


def c0_0pq(p2: npt.ArrayLike, q2: npt.ArrayLike, m2: npt.ArrayLike) -> np.ndarray:
    """Closed form C0(0, p², q²; m) = [p² C0(0,0,p²) - q² C0(0,0,q²)] / (p² - q²) (GeV⁻²), p² ≠ q²."""
    p2, q2, m2 = _as_arrays(p2, q2, m2)
    return (p2 * c0_00s(p2, m2) - q2 * c0_00s(q2, m2)) / (p2 - q2)


# ---------------------------------------------------------------------------------------------------
# Analytic D0 with four non-zero real internal masses: Denner, Nierste, Scharf, Nucl. Phys. B367 (1991)
# 637 ("A compact expression for the scalar one-loop four-point function"), with the η-function
# bookkeeping of A. Denner, Fortsch. Phys. 41 (1993) 307. Vectorised: every branch is evaluated and
# selected element-wise.
# ---------------------------------------------------------------------------------------------------

_EPS = 1e-18  # the infinitesimal imaginary parts of the Feynman prescription
_TWO_PI_I = 2j * np.pi


def li2(z: npt.ArrayLike) -> np.ndarray:
    """Complex dilogarithm Li2(z) on the principal branch (cut along real z > 1), vectorised."""
    z = np.asarray(z, dtype=np.complex128)
    return spence(1.0 - z)


def _sign(x: np.ndarray) -> np.ndarray:
    """Fortran SIGN(1, x): +1 for x ≥ 0, -1 otherwise."""
    return np.where(x >= 0.0, 1.0, -1.0)


def _eta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """η(a, b) = ln(ab) - ln(a) - ln(b) from the signs of the imaginary parts (0 or ±2πi)."""
    ia, ib, iab = np.imag(a), np.imag(b), np.imag(a * b)
    return np.where(
        (ia < 0) & (ib < 0) & (iab > 0), _TWO_PI_I, np.where((ia > 0) & (ib > 0) & (iab < 0), -_TWO_PI_I, 0.0)
    )


def _eta_s(y: np.ndarray, r: np.ndarray, rs: np.ndarray) -> np.ndarray:
    """η(y, r) where r may be real on its cut: the side is taken from rs = r(k - iε)."""
    imy, imrs = np.imag(y), np.imag(rs)
    real_r = _TWO_PI_I * ((1 + _sign(-imy)) * (1 + _sign(-imrs)) - (1 + _sign(imy)) * (1 + _sign(imrs))) / 4.0
    return np.where(np.imag(r) != 0.0, _eta(y, r), np.where(np.real(r) > 0.0, 0.0, real_r))


def _sqe(a, b, c) -> np.ndarray:
    """The root of a x² + b x + c = 0 with the larger modulus (numerically stable)."""
    p = b / a
    q = c / a
    root = np.sqrt(p * p / 4.0 - q + 0j)
    x1 = -p / 2.0 + root
    x2 = -p / 2.0 - root
    return np.where(np.abs(x1) > np.abs(x2), x1, x2)


def _r_of_k(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r with r + 1/r = k (larger root) and rs, the same root for k - iε (equal to r when r is complex)."""
    one = np.ones_like(k, dtype=np.complex128)
    r = _sqe(one, -k + 0j, one)
    rs_real = _sqe(one, -k + 1j * _EPS, one)
    return r, np.where(np.imag(r) == 0.0, rs_real, r)


def _d0_massive(m: np.ndarray, p: dict) -> np.ndarray:
    """DNS D0 for masses m (4, N) (all > 0) and invariants p[(i, j)] (N,) with r13 real (caller permutes)."""
    k = {}
    r = {}
    rs = {}
    for (i, j), pij in p.items():
        k[i, j] = (m[i - 1] ** 2 + m[j - 1] ** 2 - pij) / (m[i - 1] * m[j - 1])
        r[i, j], rs[i, j] = _r_of_k(k[i, j])
    ieps = 1j * _EPS
    aa = k[3, 4] / r[2, 4] + r[1, 3] * k[1, 2] - k[1, 4] * r[1, 3] / r[2, 4] - k[2, 3]
    bb = (r[2, 4] - 1.0 / r[2, 4]) * (r[1, 3] - 1.0 / r[1, 3]) + k[1, 2] * k[3, 4] - k[1, 4] * k[2, 3]
    cc = k[1, 2] / r[1, 3] + r[2, 4] * k[3, 4] - k[1, 4] * r[2, 4] / r[1, 3] - k[2, 3]
    dd = k[2, 3] - r[1, 3] * k[1, 2] - r[2, 4] * k[3, 4] + r[1, 3] * r[2, 4] * k[1, 4]
    xx1 = _sqe(aa, bb, cc + ieps * dd)
    xx = [xx1, (cc + ieps * dd) / aa / xx1]
    x01 = _sqe(aa, bb, cc + 0j)
    x0 = [x01, cc / aa / x01]
    swap = np.abs(x0[0] - xx[1]) < np.abs(x0[0] - xx[0])
    x0 = [np.where(swap, x0[1], x0[0]), np.where(swap, x0[0], x0[1])]
    g = [_sign(np.real(aa * (xx[0] - xx[1]))), _sign(np.real(aa * (xx[1] - xx[0])))]
    ss = [rs[1, 2], rs[2, 3], rs[3, 4], rs[1, 4]]
    s0 = [r[1, 2], r[2, 3], r[3, 4], r[1, 4]]
    total = np.zeros(aa.shape, dtype=np.complex128)
    for i in range(2):
        xs = [xx[i] / r[2, 4], xx[i] / r[2, 4] * r[1, 3], xx[i] * r[1, 3], xx[i]]
        x0s = [x0[i] / r[2, 4], x0[i] / r[2, 4] * r[1, 3], x0[i] * r[1, 3], x0[i]]
        for j in range(4):
            sign = (-1.0) ** (i + j)  # (-1)^(i+j) with 1-based i, j
            b1 = 1.0 + x0s[j] * s0[j]
            a1 = b1 + np.abs(b1) * ieps * _sign(np.imag(xs[j] * ss[j]))
            b2 = 1.0 + x0s[j] / s0[j]
            a2 = b2 + np.abs(b2) * ieps * _sign(np.imag(xs[j] / ss[j]))
            total = total + sign * (
                li2(a1) + _eta(-xs[j], ss[j]) * np.log(a1) + li2(a2) + _eta(-xs[j], 1.0 / ss[j]) * np.log(a2)
            )
    for i in range(2):
        a1 = (k[1, 3] - 2.0 * r[1, 3]) / x0[i] - r[1, 3] * k[1, 4] + k[3, 4]
        a2 = ((k[2, 4] - 2.0 * r[2, 4]) * r[1, 3] * x0[i] - r[2, 4] * k[3, 4] + k[2, 3]) / dd
        a3 = (k[1, 3] - 2.0 * r[1, 3]) * r[2, 4] / x0[i] - r[1, 3] * k[1, 2] + k[2, 3]
        a4 = ((k[2, 4] - 2.0 * r[2, 4]) * x0[i] - r[2, 4] * k[1, 4] + k[1, 2]) / dd
        l1 = np.log(a1 - np.abs(a1) * ieps)
        l2 = np.log(a2 + np.abs(a2) * ieps * g[i] * _sign(np.real(r[1, 3]) * np.imag(rs[2, 4])))
        l3 = np.log(a3 - np.abs(a3) * ieps)
        l4 = np.log(a4 + np.abs(a4) * ieps * g[i] * _sign(np.imag(rs[2, 4])))
        eta_13_24 = _eta(rs[1, 3], 1.0 / rs[2, 4])
        term = (
            _eta_s(-xx[i], r[1, 3], rs[1, 3]) * (np.log(r[1, 3] * xx[i]) + l1 + l2)
            + _eta_s(-xx[i], 1.0 / r[2, 4], 1.0 / rs[2, 4]) * (np.log(xx[i] / r[2, 4]) + l3 + l4)
            - (_eta_s(-xx[i], r[1, 3] / r[2, 4], rs[1, 3] / rs[2, 4]) + eta_13_24)
            * (np.log(xx[i] * r[1, 3] / r[2, 4]) + l3 + l2)
            + eta_13_24 * _eta_s(-xx[i], -r[1, 3] / r[2, 4], -rs[1, 3] / rs[2, 4])
        )
        total = total + (1.0 - 2.0 * i) * term  # (3 - 2 i) with 1-based i
    return total / (m[0] * m[1] * m[2] * m[3] * aa * (xx[0] - xx[1]))


def d0(
    p1sq: npt.ArrayLike,
    p2sq: npt.ArrayLike,
    p3sq: npt.ArrayLike,
    p4sq: npt.ArrayLike,
    s12: npt.ArrayLike,
    s23: npt.ArrayLike,
    m2: npt.ArrayLike,
) -> np.ndarray:
    """Scalar four-point function D0(p1², p2², p3², p4²; s12, s23; m, m, m, m) (GeV⁻⁴), analytic.

    s12 = (p1 + p2)², s23 = (p2 + p3)²; invariants in GeV², broadcastable arrays; equal internal masses
    m² - iε. Needs s12 or s23 outside (0, 4m²) (always true for gg → HH, where t̂, û < 0).
    """
    p1sq, p2sq, p3sq, p4sq, s12, s23, m2 = _as_arrays(p1sq, p2sq, p3sq, p4sq, s12, s23, m2)
    shape = p1sq.shape
    flat = [a.ravel() for a in (p1sq, p2sq, p3sq, p4sq, s12, s23, m2)]
    q1, q2, q3, q4, q12, q23, mm2 = flat
    mass = np.sqrt(mm2)
    # r13 must be real: if 0 < s12 < 4 m² rotate the propagators by one (s12 <-> s23, p_i -> p_{i+1})
    rotate = (q12 > 0.0) & (q12 < 4.0 * mm2)
    if np.any(rotate & (q23 > 0.0) & (q23 < 4.0 * mm2)):
        raise ValueError("d0: both s12 and s23 inside (0, 4 m²) is not supported")
    p = {
        (1, 2): np.where(rotate, q2, q1),
        (1, 3): np.where(rotate, q23, q12),
        (1, 4): np.where(rotate, q1, q4),
        (2, 3): np.where(rotate, q3, q2),
        (2, 4): np.where(rotate, q12, q23),
        (3, 4): np.where(rotate, q4, q3),
    }
    m = np.stack([mass, mass, mass, mass])  # (4, N)
    return _d0_massive(m, p).reshape(shape)


def _kallen_sqrt(a, b, c) -> np.ndarray:
    """√λ(a, b, c) (complex principal root), λ = a² + b² + c² - 2(ab + ac + bc)."""
    return np.sqrt(a * a + b * b + c * c - 2.0 * (a * b + a * c + b * c) + 0j)


def c0(p1sq: npt.ArrayLike, p2sq: npt.ArrayLike, p3sq: npt.ArrayLike, m2: npt.ArrayLike) -> np.ndarray:
    """Scalar three-point function C0(p1², p2², p3²; m, m, m) (GeV⁻²), analytic ('t Hooft–Veltman).

    p3² = (p1 + p2)²; invariants in GeV² (broadcastable), internal mass m² - iε. Needs all three
    invariants non-zero and λ(p1², p2², p3²) > 0 (true for C0(m_h², m_h², ŝ) above threshold); use
    :func:`c0_00s` / :func:`c0_0pq` with light-like legs.
    The formula: 't Hooft & Veltman, Nucl. Phys. B153 (1979) 365, in Denner's η-function form.
    """
    p1sq, p2sq, p3sq, m2 = _as_arrays(p1sq, p2sq, p3sq, m2)
    ieps = 1e-17j
    q10, q21, q20 = p1sq, p2sq, p3sq
    sm = (m2, m2, m2)
    alpha = _kallen_sqrt(q10, q21, q20)
    # for each of the three sides: (invariant q, masses (ma, mb) at its ends, the opposite mass mc)
    sides = [
        (q21, sm[1], sm[2], sm[0], q20 - q10, p2sq),
        (q20, sm[2], sm[0], sm[1], q10 - q21, p3sq),
        (q10, sm[0], sm[1], sm[2], q21 - q20, p1sq),
    ]
    others = [(q20, q10), (q10, q21), (q21, q20)]
    total = np.zeros(p1sq.shape, dtype=np.complex128)
    for (q, ma, mb, mc, dq, r), (qa, qb) in zip(sides, others, strict=True):
        alp = _kallen_sqrt(q, ma, mb) * (1.0 + ieps * q)
        x = [(q - ma + mb + alp) / (2.0 * q), (q - ma + mb - alp) / (2.0 * q)]
        y0 = (q * (q - qa - qb + 2.0 * mc - ma - mb) - dq * (ma - mb) + alpha * (q - ma + mb)) / (
            2.0 * alpha * q
        )
        y = [y0 - x[0], y0 - x[1]]
        log_ratio = np.log((1.0 - y0) / (-y0))
        for j in range(2):
            total = total + li2((y0 - 1.0) / y[j]) - li2(y0 / y[j])
            total = total + _eta(1.0 - x[j], 1.0 / y[j]) * np.log((y0 - 1.0) / y[j])
            total = total - _eta(-x[j], 1.0 / y[j]) * np.log(y0 / y[j])
        total = total - _eta(-x[0], -x[1]) * log_ratio + _eta(y[0], y[1]) * log_ratio
        extra = (-r > 0.0) & (-np.imag(y[0] * y[1]) > 0.0)
        total = total + np.where(extra, _TWO_PI_I * log_ratio, 0.0)
    return total / alpha
