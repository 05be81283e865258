"""Binned Poisson likelihood in κλ: closed-form −2 ln L and asymptotic CLs, the same model in pyhf, workspaces."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, xlogy

from spanet2.stats.histograms import Templates

__all__ = ["ASIMOV_CONVENTIONS", "KappaLikelihood", "LikelihoodSettings"]

logger = logging.getLogger(__name__)

ASIMOV_CONVENTIONS = ("background", "background+sm")
_BISECTION_STEPS = 64  # μ̂ to ~μ_max·2⁻⁶⁴: exact to double precision
_THETA_BOUND = 5.0  # nuisance parameters live in [−5, 5] (pyhf's normsys bounds)


@dataclass(frozen=True)
class LikelihoodSettings:
    """How the likelihood is built.

    asimov: "background" (Asimov data = background only, the study's convention) or "background+sm"
    (background + SM signal at κλ = 1, the ATLAS/CMS convention). background_norm_uncertainty /
    signal_theory_uncertainty: relative 1σ normalisation uncertainties (0 = none), each a Gaussian-constrained
    nuisance parameter θ with yield factor (1 + δ)^θ (pyhf normsys, interpolation code1), profiled.
    mc_stat: the per-bin MC-statistical uncertainty of the background template (pyhf staterror, one
    Gaussian-constrained γ per bin with relative width √Σw²/Σw), profiled.
    With any nuisance parameter both −2 ln L and CLs come from pyhf fits at each κλ; without, closed forms.
    cls_engine: "auto" (closed form without nuisances, pyhf hypotest with them), "closed_form" or "pyhf".
    poi_upper_bound: upper bound of the signal strength μ in the CLs fits (lower bound 0: q̃_μ).
    """

    asimov: str = "background"
    background_norm_uncertainty: float = 0.0
    signal_theory_uncertainty: float = 0.0
    cls_engine: str = "auto"
    poi_upper_bound: float = 50.0
    mc_stat: bool = False

    @property
    def has_nuisances(self) -> bool:
        return self.background_norm_uncertainty > 0 or self.signal_theory_uncertainty > 0 or self.mc_stat

    def cls_uses_pyhf(self) -> bool:
        return self.cls_engine == "pyhf" or (self.cls_engine == "auto" and self.has_nuisances)


def _patch_name(kappa: float) -> str:
    """A PatchSet patch name (pyhf allows [a-zA-Z0-9_]): κλ = −2.5 → kappa_lambda_m2p5."""
    return "kappa_lambda_" + f"{float(kappa):g}".replace("-", "m").replace(".", "p").replace("+", "")


class KappaLikelihood:
    """The expected-yield model ν_i(κλ) = L·S_i(κλ) + L·B_i of one method at one luminosity.

    templates: selected m_HH templates (fb per bin); lumi_ifb: integrated luminosity (fb⁻¹).
    Bins with neither background nor any signal term are dropped.
    """

    def __init__(self, templates: Templates, lumi_ifb: float, settings: LikelihoodSettings):
        if not lumi_ifb > 0:
            raise ValueError(f"luminosity must be positive, got {lumi_ifb}")
        if settings.asimov not in ASIMOV_CONVENTIONS:
            raise ValueError(f"asimov must be one of {ASIMOV_CONVENTIONS}, got {settings.asimov!r}")
        used = (templates.background > 0) | np.any(templates.signal_terms != 0, axis=0)  # (B,)
        self.templates = templates
        self.lumi_ifb = float(lumi_ifb)
        self.settings = settings
        self.terms = lumi_ifb * templates.signal_terms[:, used]  # (3, B') expected events
        self.background = lumi_ifb * templates.background[used]  # (B',)
        sumw2 = templates.background_sumw2
        # absolute MC-statistical error of the background per bin (events): L·√Σw²
        self.background_mc_error = (
            lumi_ifb * np.sqrt(sumw2[used]) if sumw2.size == used.size else np.zeros_like(self.background)
        )
        if settings.mc_stat and (np.any(self.background <= 0) or not np.any(self.background_mc_error > 0)):
            raise ValueError(
                "mc_stat needs background MC in every m_HH bin and its sum of squared weights in the templates"
            )
        self.data = self.background.copy()
        if settings.asimov == "background+sm":
            self.data = self.data + self.signal(1.0)
        self._log_bkg = np.log1p(settings.background_norm_uncertainty)
        self._log_sig = np.log1p(settings.signal_theory_uncertainty)

    # ----------------------------------------------------------------------------------------- yields
    def signal(self, kappa: np.ndarray | float) -> np.ndarray:
        """Expected signal events per bin: (B',) for a scalar κλ, (K, B') for κλ of shape (K,)."""
        kappa = np.asarray(kappa, dtype=np.float64)
        powers = np.stack([np.ones_like(kappa), kappa, kappa**2], axis=-1)  # (..., 3)
        return np.clip(powers @ self.terms, 0.0, None)

    # ------------------------------------------------------------------------------ profile likelihood
    def twice_nll(self, kappa: np.ndarray | float) -> np.ndarray:
        """−2 ln L(κλ) up to a constant, nuisance parameters profiled. (K,) for κλ of shape (K,).

        Without nuisances: 2 Σ_i [ν_i − n_i ln ν_i] with ν = s(κλ) + b (docs/physics.md §9). With them a pyhf
        fit at μ = 1 per κλ profiles them (`twice_nll_pyhf`; constants differ from the closed form).
        """
        kappa = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
        if self.settings.has_nuisances:
            return self.twice_nll_pyhf(kappa)
        nu = self.signal(kappa) + self.background  # (K, B)
        return 2.0 * np.sum(nu - xlogy(self.data, nu), axis=1)

    def uses_pyhf(self, statistic: str) -> bool:
        """Whether a point of `statistic` ("pl" or "cls") is a pyhf fit (slow) rather than a closed form."""
        return self.settings.has_nuisances if statistic == "pl" else self.settings.cls_uses_pyhf()

    def twice_nll_newton(self, kappa: np.ndarray | float) -> np.ndarray:
        """−2 ln L(κλ) with the two normalisation nuisances (θ_s, θ_b) profiled by a vectorised Newton
        iteration: an independent check of the pyhf fits (tests pin the two). Ignores mc_stat. (K,)"""
        sig = self.signal(np.atleast_1d(np.asarray(kappa, dtype=np.float64)))  # (K, B)
        a, c = self._log_sig, self._log_bkg  # d ln(yield)/dθ
        n, bkg = self.data, self.background
        theta = np.zeros((sig.shape[0], 2))  # (K, 2): θ_s, θ_b

        def objective(th: np.ndarray) -> np.ndarray:
            nu = sig * np.exp(a * th[:, :1]) + bkg * np.exp(c * th[:, 1:])  # (K, B)
            return 2.0 * np.sum(nu - xlogy(n, nu), axis=1) + np.sum(th**2, axis=1)

        value = objective(theta)
        for _ in range(100):
            s_t = sig * np.exp(a * theta[:, :1])  # (K, B)
            b_t = bkg * np.exp(c * theta[:, 1:])
            nu = s_t + b_t
            ratio = np.divide(n, nu, out=np.zeros_like(nu), where=nu > 0)
            resid = 1.0 - ratio  # (K, B)
            w2 = np.divide(n, nu**2, out=np.zeros_like(nu), where=nu > 0)
            grad = np.stack(
                [
                    2 * a * np.sum(resid * s_t, 1) + 2 * theta[:, 0],
                    2 * c * np.sum(resid * b_t, 1) + 2 * theta[:, 1],
                ],
                axis=1,
            )  # (K, 2)
            h_ss = 2 * np.sum(w2 * (a * s_t) ** 2 + resid * a * a * s_t, 1) + 2
            h_bb = 2 * np.sum(w2 * (c * b_t) ** 2 + resid * c * c * b_t, 1) + 2
            h_sb = 2 * np.sum(w2 * (a * s_t) * (c * b_t), 1)
            det = h_ss * h_bb - h_sb**2
            ok = (det > 0) & (h_ss > 0)
            newton = np.stack(
                [
                    (h_bb * grad[:, 0] - h_sb * grad[:, 1]) / np.where(ok, det, 1),
                    (h_ss * grad[:, 1] - h_sb * grad[:, 0]) / np.where(ok, det, 1),
                ],
                axis=1,
            )
            step = np.where(ok[:, None], newton, 0.1 * grad)  # (K, 2) Newton, or gradient descent
            # A parameter held at its bound (gradient pushing outward) stays there; the other moves alone.
            held = (np.abs(theta) >= _THETA_BOUND - 1e-12) & (np.sign(-grad) == np.sign(theta))  # (K, 2)
            alone = np.stack(
                [grad[:, 0] / np.where(h_ss > 0, h_ss, 1), grad[:, 1] / np.where(h_bb > 0, h_bb, 1)], 1
            )
            step = np.where(held.any(axis=1, keepdims=True), np.where(held, 0.0, alone), step)
            scale = np.ones(theta.shape[0])
            for _ in range(30):  # backtracking: accept the first step that does not increase the objective
                trial = np.clip(theta - scale[:, None] * step, -_THETA_BOUND, _THETA_BOUND)
                new = objective(trial)
                worse = new > value + 1e-12
                if not worse.any():
                    break
                scale = np.where(worse, scale * 0.5, scale)
            theta = np.where(worse[:, None], theta, trial)
            improvement = value - np.where(worse, value, new)
            value = np.where(worse, value, new)
            at_bound = (np.abs(theta) >= _THETA_BOUND) & (np.sign(-grad) == np.sign(theta))
            if np.all(improvement < 1e-11) and np.all(
                (np.abs(grad) < 1e-6 * (1 + np.abs(value[:, None]))) | at_bound
            ):
                break
        return value

    # -------------------------------------------------------------------------------------------- CLs
    def cls(self, kappa: np.ndarray | float) -> np.ndarray:
        """Median expected CLs of μ = 1 of the κλ signal on the Asimov data (q̃_μ, asymptotic). (K,)

        Without nuisance parameters this is the closed form of pyhf's AsymptoticCalculator (tests pin it
        to `pyhf.infer.hypotest`); with them, or with cls_engine = "pyhf", pyhf itself is called per κλ.
        """
        kappa = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
        if self.settings.cls_uses_pyhf():
            return self.cls_pyhf(kappa)
        sig = self.signal(kappa)  # (K, B)
        bkg, n = self.background, self.data
        mu_hat = self._mu_hat(sig, n)  # (K,)

        def nll(mu: np.ndarray, data: np.ndarray) -> np.ndarray:
            nu = mu[:, None] * sig + bkg  # (K, B)
            return np.sum(nu - xlogy(data, nu), axis=1)

        one = np.ones_like(kappa)
        q_mu = np.where(mu_hat > 1.0, 0.0, np.clip(2 * (nll(one, n) - nll(mu_hat, n)), 0.0, None))
        # Asimov data of the background-only hypothesis (μ = 0; no nuisances to refit): μ̂_A = 0.
        q_mu_a = np.clip(2 * (nll(one, bkg) - nll(np.zeros_like(kappa), bkg)), 0.0, None)
        sqrt_q, sqrt_qa = np.sqrt(q_mu), np.sqrt(q_mu_a)
        with np.errstate(divide="ignore", invalid="ignore"):
            teststat = np.where(sqrt_q <= sqrt_qa, sqrt_q - sqrt_qa, (q_mu - q_mu_a) / (2 * sqrt_qa))
        cl_sb = ndtr(-(teststat + sqrt_qa))
        cl_b = ndtr(-teststat)
        return cl_sb / cl_b

    def _mu_hat(self, sig: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Best-fit signal strength in [0, poi_upper_bound] for each κλ (bisection on the score). (K,)"""
        bkg = self.background

        def score(mu: np.ndarray) -> np.ndarray:
            nu = mu[:, None] * sig + bkg
            ratio = np.divide(n, nu, out=np.where(n > 0, np.inf, 0.0) * np.ones_like(nu), where=nu > 0)
            return np.sum(sig * (ratio - 1.0), axis=1)

        lo = np.zeros(sig.shape[0])
        hi = np.full(sig.shape[0], self.settings.poi_upper_bound)
        at_zero = score(lo) <= 0
        at_top = score(hi) >= 0
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            up = score(mid) > 0
            lo = np.where(up, mid, lo)
            hi = np.where(up, hi, mid)
        return np.where(at_zero, 0.0, np.where(at_top, self.settings.poi_upper_bound, 0.5 * (lo + hi)))

    # ------------------------------------------------------------------------------------------- pyhf
    def _signal_sample(self, kappa: float) -> dict:
        modifiers = [{"name": "mu", "type": "normfactor", "data": None}]
        if self.settings.signal_theory_uncertainty > 0:
            up = 1.0 + self.settings.signal_theory_uncertainty
            modifiers.append({"name": "signal_theory", "type": "normsys", "data": {"hi": up, "lo": 1.0 / up}})
        return {"name": "signal", "data": self.signal(float(kappa)).tolist(), "modifiers": modifiers}

    def _background_sample(self) -> dict:
        modifiers = []
        if self.settings.background_norm_uncertainty > 0:
            up = 1.0 + self.settings.background_norm_uncertainty
            modifiers.append(
                {"name": "background_norm", "type": "normsys", "data": {"hi": up, "lo": 1.0 / up}}
            )
        if self.settings.mc_stat:
            modifiers.append(
                {"name": "mc_stat", "type": "staterror", "data": self.background_mc_error.tolist()}
            )
        return {"name": "background", "data": self.background.tolist(), "modifiers": modifiers}

    def _spec(self, samples: list[dict], name: str) -> dict:
        return {
            "version": "1.0.0",
            "channels": [{"name": "mhh", "samples": samples}],
            "observations": [{"name": "mhh", "data": self.data.tolist()}],
            "measurements": [
                {
                    "name": name,
                    "config": {
                        "poi": "mu",
                        "parameters": [{"name": "mu", "bounds": [[0.0, self.settings.poi_upper_bound]]}],
                    },
                }
            ],
        }

    def workspace(self, kappa: float) -> dict:
        """The pyhf JSON workspace of this model at one κλ (signal strength μ = 1 is that κλ's signal)."""
        return self._spec(
            [self._signal_sample(kappa), self._background_sample()], f"kappa_lambda_{float(kappa):g}"
        )

    def background_only_workspace(self) -> dict:
        """The background-only pyhf workspace (HEPData's BkgOnly.json): data and background, no signal."""
        return self._spec([self._background_sample()], "kappa_lambda")

    def patchset(
        self, kappas: np.ndarray, *, name: str, description: str = "", hepdata: str | None = None
    ) -> dict:
        """A pyhf PatchSet: one patch per κλ that adds that κλ's signal sample to `background_only_workspace`
        (the HEPData convention), labelled by the value of κλ (names kappa_lambda_m2p5 for −2.5); the digest
        pins the background-only file. hepdata: the INSPIRE id of the HEPData record ("ins" + 7 digits),
        which pyhf's schema requires under metadata.references (pyhf does not load a PatchSet without it).
        Normalisation nuisances are pyhf normsys with interpolation code1
        ((1 + δ)^θ, as the scan fits them): build the model with
        modifier_settings={"normsys": {"interpcode": "code1"}} to reproduce the scan with nuisances."""
        import pyhf

        digest = pyhf.utils.digest(self.background_only_workspace(), algorithm="sha256")
        metadata: dict[str, Any] = {
            "name": name,
            "description": description or "kappa_lambda signal hypotheses on the background-only workspace",
            "digests": {"sha256": digest},
            "labels": ["kappa_lambda"],
        }
        if hepdata is not None:
            metadata["references"] = {"hepdata": hepdata}
        return {
            "metadata": metadata,
            "patches": [
                {
                    "metadata": {"name": _patch_name(k), "values": [float(k)]},
                    "patch": [
                        {"op": "add", "path": "/channels/0/samples/0", "value": self._signal_sample(k)}
                    ],
                }
                for k in np.asarray(kappas, dtype=np.float64)
            ],
            "version": "1.0.0",
        }

    def pyhf_model(self, kappa: float):
        """(model, data) of pyhf for one κλ (numpy backend; normsys interpolation code1 = (1 + δ)^θ)."""
        import pyhf

        ws = pyhf.Workspace(self.workspace(kappa))
        model = ws.model(
            modifier_settings={"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
        )
        return model, np.asarray(ws.data(model), dtype=np.float64)

    def twice_nll_pyhf(self, kappa: np.ndarray | float) -> np.ndarray:
        """−2 ln L(κλ) evaluated/fitted by pyhf at μ = 1 (nuisances profiled by pyhf's fit). (K,)"""
        import pyhf

        pyhf.set_backend("numpy")
        out = []
        for k in np.atleast_1d(kappa):
            model, data = self.pyhf_model(float(k))
            if model.config.npars == 1:
                out.append(float(-2.0 * model.logpdf(np.array([1.0]), data)[0]))
            else:
                _, val = pyhf.infer.mle.fixed_poi_fit(1.0, data, model, return_fitted_val=True)
                out.append(float(val))
        return np.asarray(out)

    def cls_pyhf(self, kappa: np.ndarray | float) -> np.ndarray:
        """CLs of μ = 1 per κλ from `pyhf.infer.hypotest` (q̃_μ, asymptotics) on the Asimov data. (K,)"""
        import pyhf

        pyhf.set_backend("numpy")
        out = []
        for k in np.atleast_1d(kappa):
            model, data = self.pyhf_model(float(k))
            out.append(float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde")))
        return np.asarray(out)

    def upper_limit_pyhf(self, kappa: float, mu_scan: np.ndarray | None) -> float:
        """The study's method: 95 % CL upper limit on μ of the κλ signal from a μ scan (pyhf upper_limit).

        μ_UL < 1 means σ_UL < σ(κλ): that κλ is excluded. The limit is read on the Asimov data (the median
        expected limit under the Asimov hypothesis).
        """
        import pyhf

        pyhf.set_backend("numpy")
        model, data = self.pyhf_model(float(kappa))
        scan = None if mu_scan is None else np.asarray(mu_scan, dtype=np.float64)
        observed, _expected = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, scan=scan, level=0.05, test_stat="qtilde"
        )
        return float(observed)
