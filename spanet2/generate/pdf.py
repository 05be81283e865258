"""LHAPDF6 "lhagrid1" reader with log-bicubic interpolation, and 1-loop α_s running (NNPDF2.3 LO)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.interpolate import RectBivariateSpline

from spanet2.errors import DataError

__all__ = ["PDFGrid", "load_lhapdf_grid", "default_pdf", "alpha_s", "DEFAULT_PDF_FILE", "ALPHA_S_MZ", "M_Z"]

logger = logging.getLogger(__name__)

DEFAULT_PDF_FILE = "NNPDF23_lo_as_0130_qed_0000.dat"
ALPHA_S_MZ = 0.130  # NNPDF2.3 LO, α_s(M_Z)
M_Z = 91.1876  # GeV
_QUARK_MASSES = (1.275, 4.18)  # GeV: c, b flavour thresholds for the running (MS-bar-like values)


def alpha_s(mu: npt.ArrayLike, *, alpha_s_mz: float = ALPHA_S_MZ, m_z: float = M_Z) -> np.ndarray:
    """One-loop α_s(μ) (μ in GeV) from α_s(M_Z): n_f = 5 above m_b (also above m_t, as MadGraph's LO
    running does), n_f = 4 below, matched continuously at m_b. The LO PDF set is fitted with one-loop running.
    """
    mu = np.asarray(mu, dtype=np.float64)

    def run(a0, q0, q, nf):
        b0 = (33.0 - 2.0 * nf) / (12.0 * np.pi)
        return a0 / (1.0 + a0 * b0 * np.log(q**2 / q0**2))

    m_b = _QUARK_MASSES[1]
    a_b = run(alpha_s_mz, m_z, m_b, 5)
    return np.where(mu > m_b, run(alpha_s_mz, m_z, mu, 5), run(a_b, m_b, mu, 4))


@dataclass(frozen=True)
class PDFGrid:
    """One LHAPDF6 member: x f(x, Q) on knots, per flavour (PDG id; 21 = gluon).

    x: (X,) ascending; q: (Q,) GeV ascending; xf: {pdg: (X, Q)} values of x·f(x, Q).
    Interpolation: bicubic spline of x·f in (ln x, ln Q²) (the LHAPDF default "logcubic" scheme);
    outside the grid x and Q are clamped to the edge (frozen extrapolation).
    """

    path: str
    x: np.ndarray
    q: np.ndarray
    xf: dict[int, np.ndarray]

    def xfx(self, pdg: int, x: npt.ArrayLike, q: npt.ArrayLike) -> np.ndarray:
        """x·f(x, Q) for flavour ``pdg`` (arrays of one shape; Q in GeV)."""
        spline = self._spline(pdg)
        lx = np.log(np.clip(np.asarray(x, dtype=np.float64), self.x[0], self.x[-1]))
        lq = np.log(np.clip(np.asarray(q, dtype=np.float64), self.q[0], self.q[-1]) ** 2)
        return np.maximum(spline.ev(lx, lq), 0.0)

    def _spline(self, pdg: int) -> RectBivariateSpline:
        cache = self.__dict__.setdefault("_splines", {})
        if pdg not in cache:
            if pdg not in self.xf:
                raise DataError(self.path, f"flavour {pdg}", f"not in the grid (has {sorted(self.xf)})")
            cache[pdg] = RectBivariateSpline(np.log(self.x), np.log(self.q**2), self.xf[pdg], kx=3, ky=3)
        return cache[pdg]


def load_lhapdf_grid(path: str | Path) -> PDFGrid:
    """Read an LHAPDF6 ``lhagrid1`` member file (one or more Q subgrids; the subgrids are merged).

    Raises DataError naming the file and the line/block at fault.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(path, None, f"cannot read LHAPDF grid: {exc}") from exc
    blocks = text.split("\n---")
    header = blocks[0]
    if "lhagrid1" not in header:
        raise DataError(path, "Format", "expected an LHAPDF6 grid with 'Format: lhagrid1'")
    xs_all: np.ndarray | None = None
    q_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    flavours: list[int] | None = None
    for i, block in enumerate(blocks[1:], start=1):
        lines = [ln for ln in block.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        if len(lines) < 4:
            raise DataError(path, f"subgrid {i}", "expected x knots, Q knots, flavour ids and values")
        try:
            x = np.array(lines[0].split(), dtype=np.float64)
            q = np.array(lines[1].split(), dtype=np.float64)
            fl = [int(v) for v in lines[2].split()]
            vals = np.array(" ".join(lines[3:]).split(), dtype=np.float64)
        except ValueError as exc:
            raise DataError(path, f"subgrid {i}", f"non-numeric entry: {exc}") from exc
        if vals.size != x.size * q.size * len(fl):
            raise DataError(
                path, f"subgrid {i}", f"expected {x.size}×{q.size}×{len(fl)} values, found {vals.size}"
            )
        if xs_all is not None and not np.array_equal(xs_all, x):
            raise DataError(path, f"subgrid {i}", "x knots differ between subgrids")
        if flavours is not None and flavours != fl:
            raise DataError(path, f"subgrid {i}", "flavour list differs between subgrids")
        xs_all, flavours = x, fl
        values = vals.reshape(x.size, q.size, len(fl))  # (X, Q, F): x outer, Q inner
        if q_parts:  # a repeated boundary Q knot belongs to the upper subgrid
            keep = q > q_parts[-1][-1]
            q, values = q[keep], values[:, keep]
        q_parts.append(q)
        val_parts.append(values)
    if xs_all is None or flavours is None:
        raise DataError(path, None, "no subgrid found")
    q_all = np.concatenate(q_parts)
    values = np.concatenate(val_parts, axis=1)  # (X, Q, F)
    xf = {pdg: np.ascontiguousarray(values[:, :, k]) for k, pdg in enumerate(flavours)}
    if 0 in xf and 21 not in xf:  # LHAPDF allows 0 for the gluon
        xf[21] = xf.pop(0)
    return PDFGrid(str(path), xs_all, q_all, xf)


@lru_cache(maxsize=1)
def default_pdf() -> PDFGrid:
    """The shipped NNPDF2.3 LO (α_s(M_Z) = 0.130, QED) central member, MadGraph's default PDF."""
    ref = resources.files("spanet2") / "data" / DEFAULT_PDF_FILE
    with resources.as_file(ref) as path:
        return load_lhapdf_grid(path)
