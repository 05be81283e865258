"""Physics checks of the pyAmpliCol tree |M|² (tree_me): symmetries, Ward identity, 2 → 2 formulas, HEFT, errors."""
# Artifacts beyond tree_me's own two are generated once (in a locked subprocess: Symbolica's restricted
# mode allows one process per user) into cache_root()/"tests" and only evaluated (f64, Symbolica hidden)
# in this process; the correlated (spin-replaced) evaluation needs Symbolica and runs in a subprocess too.

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from spanet2.errors import InputError
from spanet2.generate import hh_amplitude as hh
from spanet2.generate import tree_me

needs_pyamplicol = pytest.mark.skipif(
    importlib.util.find_spec("pyamplicol") is None, reason="pyAmpliCol (the [exact] extra) is not installed"
)
METRIC = np.array([1.0, -1.0, -1.0, -1.0])

_GENERATE_WARD = """
import sys
from pyamplicol import CorrelatorConfig, Generator, ModelSource
from pyamplicol.config import ColorConfig, EvaluatorConfig, EvaluatorOptimizationConfig, GenerationConfig, RunConfig

config = RunConfig(
    action="generate",
    color=ColorConfig(accuracy="full", contraction="direct"),
    generation=GenerationConfig(workers=1, emit_api_bundle=False),
    evaluator=EvaluatorConfig(execution_mode="compiled", optimization=EvaluatorOptimizationConfig(cores=1)),
)
Generator(config).generate(
    sys.argv[1], sys.argv[2], model=ModelSource.built_in_sm(),
    correlators=CorrelatorConfig(color_correlations=(), spin_correlations=((1,),)),
)
"""

_EVALUATE_CORRELATED = """
import json, sys
from pyamplicol import CorrelatedRequest, Runtime

job = json.loads(sys.stdin.read())
runtime = Runtime.load(sys.argv[1])
requests = {name: CorrelatedRequest("born", spin_vectors={1: vectors}) for name, vectors in job["leg1"].items()}
requests["physical"] = CorrelatedRequest("born", spin_vectors={})
results = runtime.evaluate_correlated_many(job["points"], requests, precision=16)
print(json.dumps({name: [complex(v).real for v in values] for name, values in results.items()}))
"""


# -- kinematics ----------------------------------------------------------------------------------------------
def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b * METRIC).sum(axis=-1)


def _rambo(rng: np.random.Generator, n_points: int, sqrt_s: np.ndarray, masses: list[float]) -> np.ndarray:
    """(N, n, 4) momenta flat in n-body phase space at rest with mass √s (RAMBO, then massive rescaling)."""
    masses = np.asarray(masses, dtype=np.float64)
    n = len(masses)
    cos_t = 2 * rng.random((n_points, n)) - 1
    phi = 2 * np.pi * rng.random((n_points, n))
    q0 = -np.log(rng.random((n_points, n)) * rng.random((n_points, n)))
    sin_t = np.sqrt(1 - cos_t**2)
    q = np.stack([q0, q0 * sin_t * np.cos(phi), q0 * sin_t * np.sin(phi), q0 * cos_t], axis=-1)
    total = q.sum(axis=1)
    mass = np.sqrt(_dot(total, total))
    b = -total[:, 1:] / mass[:, None]
    gamma, x = total[:, 0] / mass, sqrt_s / mass
    bq = (b[:, None, :] * q[..., 1:]).sum(axis=-1)
    vec = x[:, None, None] * (
        q[..., 1:] + b[:, None, :] * (q[..., :1] + (bq / (1 + gamma[:, None]))[..., None])
    )
    p2 = (vec**2).sum(axis=-1)  # massless: energies |p|; now rescale |p| by ξ so that Σ E = √s
    xi = np.ones(n_points)
    for _ in range(60):
        energy = np.sqrt(masses**2 + xi[:, None] ** 2 * p2)
        xi -= (energy.sum(axis=1) - sqrt_s) / (xi[:, None] * p2 / energy).sum(axis=1)
    energy = np.sqrt(masses**2 + xi[:, None] ** 2 * p2)
    return np.concatenate([energy[..., None], xi[:, None, None] * vec], axis=-1)


def _boost_z(p: np.ndarray, rapidity: np.ndarray) -> np.ndarray:
    ch, sh = np.cosh(rapidity)[:, None], np.sinh(rapidity)[:, None]
    out = p.copy()
    out[..., 0], out[..., 3] = ch * p[..., 0] + sh * p[..., 3], sh * p[..., 0] + ch * p[..., 3]
    return out


def _incoming(sqrt_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(sqrt_s, dtype=np.float64) / 2
    zero = np.zeros_like(e)
    return np.stack([e, zero, zero, e], axis=-1), np.stack([e, zero, zero, -e], axis=-1)


def _points_2to4(rng: np.random.Generator, sqrt_s: np.ndarray, m_b: float, lab: bool = True) -> np.ndarray:
    """(N, 6, 4) a b ↦ b b̄ b b̄ points: CM (√ŝ given) or lab (incoming x₁√s/2, x₂√s/2 along ±z: a z boost)."""
    p1, p2 = _incoming(sqrt_s)
    p = np.concatenate([p1[:, None], p2[:, None], _rambo(rng, len(sqrt_s), sqrt_s, [m_b] * 4)], axis=1)
    return _boost_z(p, rng.uniform(-1.5, 1.5, len(sqrt_s))) if lab else p


def _points_2to2(sqrt_s: np.ndarray, cos_t: np.ndarray, m: float, phi: float = 0.7) -> np.ndarray:
    """(N, 4, 4) CM points a b → c d with m_c = m_d = m at scattering angle θ (cos_t) and azimuth phi."""
    sqrt_s, cos_t = np.broadcast_arrays(np.asarray(sqrt_s, float), np.asarray(cos_t, float))
    p1, p2 = _incoming(sqrt_s)
    k = np.sqrt(sqrt_s**2 / 4 - m * m)
    sin_t = np.sqrt(1 - cos_t**2)
    d = k[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)
    e = (sqrt_s / 2)[:, None]
    return np.stack([p1, p2, np.concatenate([e, d], axis=1), np.concatenate([e, -d], axis=1)], axis=1)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """4×4 random proper rotation (Haar, from a QR decomposition)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    q[:, 0] *= np.sign(np.linalg.det(q))
    rotation = np.eye(4)
    rotation[1:, 1:] = q
    return rotation


def _random_lorentz(rng: np.random.Generator, beta_max: float = 0.9) -> np.ndarray:
    """4×4 Λ = B(β) R: a random rotation, then a boost of random direction and 0.3 β_max ≤ |β| ≤ β_max."""
    beta = rng.normal(size=3)
    beta *= rng.uniform(0.3, 1.0) * beta_max / np.linalg.norm(beta)
    gamma = 1 / np.sqrt(1 - beta @ beta)
    boost = np.eye(4)
    boost[0, 0], boost[0, 1:], boost[1:, 0] = gamma, gamma * beta, gamma * beta
    boost[1:, 1:] += (gamma - 1) * np.outer(beta, beta) / (beta @ beta)
    return boost @ _random_rotation(rng)


# -- artifacts -----------------------------------------------------------------------------------------------
def _checked(args: list[str], what: str, stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
    return result.stdout


def _test_artifact(name: str, args_for) -> Path:
    """cache_root()/tests/NAME, generated once by the subprocess args_for(out) under the cache lock."""
    root = tree_me.cache_root()
    final = root / "tests" / name
    if (final / "artifact.json").exists():
        return final
    with tree_me._cache_lock(root):
        if not (final / "artifact.json").exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=final.parent))
            try:
                _checked(args_for(tmp / name), f"generating {name}")
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp / name, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _cli_generate(process: str, *options: str):
    return lambda out: [
        sys.executable,
        "-m",
        "pyamplicol",
        "generate",
        process,
        str(out),
        *options,
        "--progress",
        "off",
    ]


def _runtime(path: Path, **parameters: float):
    """pyAmpliCol's f64 runtime of an artifact, loaded with Symbolica hidden (model parameters overridden)."""
    pyamplicol = tree_me._import_runtime()
    with tree_me._without_symbolica():
        runtime = pyamplicol.Runtime.load(path, model_parameters=parameters or None)
        runtime.evaluate(np.ones((1, len(runtime.physics.external_particles), 4)))
    return runtime


def _evaluate(runtime, momenta: np.ndarray) -> np.ndarray:
    return np.real(np.asarray(runtime.evaluate(np.ascontiguousarray(momenta)))).astype(np.float64)


def _parameters(runtime) -> dict[str, float]:
    return {p.name: float(p.default_real) for p in runtime.physics.model_parameters}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1.0)))


# -- 1. Lorentz invariance and discrete symmetries ----------------------------------------------------------
@needs_pyamplicol
@pytest.mark.parametrize("name", ["gg", "qq"])
def test_lorentz_invariance(name):
    """|M|² at lab points is unchanged by random rotations followed by random boosts (not along z only)."""
    me = tree_me.matrix_element(name)
    rng = np.random.default_rng(11 if name == "gg" else 12)
    p = _points_2to4(rng, rng.uniform(150.0, 3000.0, 16), me.m_b)
    np.testing.assert_allclose(_dot(p[:, 2:], p[:, 2:]), me.m_b**2, rtol=1e-9)
    np.testing.assert_allclose(p[:, :2].sum(axis=1), p[:, 2:].sum(axis=1), atol=1e-9 * p[..., 0].max())
    reference = me(p)
    assert np.all(reference > 0) and np.all(np.isfinite(reference))
    worst = max(_rel(me(p @ _random_lorentz(rng).T), reference) for _ in range(4))
    assert worst < 1e-10, worst
    # the check can fail: rotating the final state alone (another phase-space point) changes |M|²
    turned = p.copy()
    turned[:, 2:] = p[:, 2:] @ _random_rotation(rng).T
    assert _rel(me(turned), reference) > 1e-2


@needs_pyamplicol
@pytest.mark.parametrize("name", ["gg", "qq"])
def test_discrete_symmetries(name):
    """Parity (z mirror), C, identical b (b̄) relabelling; Bose g₁ ↔ g₂, while u(p₁)ū(p₂) ≠ u(p₂)ū(p₁)."""
    me = tree_me.matrix_element(name)
    rng = np.random.default_rng(21 if name == "gg" else 22)
    p = _points_2to4(rng, rng.uniform(150.0, 3000.0, 16), me.m_b)
    reference = me(p)
    mirrored = p.copy()
    mirrored[..., 3] *= -1  # pz → −pz for all legs: an improper Lorentz map, parity-even QCD
    assert _rel(me(mirrored), reference) < 1e-10
    assert _rel(me(p[:, [0, 1, 4, 3, 2, 5]]), reference) < 1e-10  # b₁ ↔ b₂
    assert _rel(me(p[:, [0, 1, 2, 5, 4, 3]]), reference) < 1e-10  # b̄₁ ↔ b̄₂
    swapped_in = me(p[:, [1, 0, 2, 3, 4, 5]])
    if name == "gg":
        assert _rel(swapped_in, reference) < 1e-10  # Bose symmetry of the two gluons
        assert _rel(me(p[:, [0, 1, 3, 2, 5, 4]]), reference) < 1e-10  # C: b ↔ b̄ (gg is C-even)
    else:
        assert _rel(me(p[:, [1, 0, 3, 2, 5, 4]]), reference) < 1e-10  # C: u ↔ ū and b ↔ b̄
        # q̄q is not qq̄: the tree-level 2 → 4 has a charge asymmetry, so the incoming order matters …
        assert _rel(swapped_in, reference) > 1e-2
        # … and ū(p₁)u(p₂) = u ū with the incoming momenta swapped = u ū with the final state mirrored in z
        # (in the partonic CM frame, where the mirror maps p₁ ↔ p₂)
        cm = _points_2to4(rng, rng.uniform(150.0, 3000.0, 16), me.m_b, lab=False)
        final_mirrored = cm.copy()
        final_mirrored[:, 2:, 3] *= -1
        assert _rel(me(cm[:, [1, 0, 2, 3, 4, 5]]), me(final_mirrored)) < 1e-10


@needs_pyamplicol
def test_alpha_s_scaling():
    """|M|² ∝ α_s⁴ exactly (tree_me's callers rescale from the artifact's α_s = 0.118 per event)."""
    me = tree_me.matrix_element("gg")
    assert me.alpha_s == tree_me.ALPHA_S_ARTIFACT == 0.118 and me.m_b == 4.7
    rng = np.random.default_rng(31)
    p = _points_2to4(rng, rng.uniform(150.0, 3000.0, 8), me.m_b)
    doubled = _runtime(tree_me.artifact_path("gg"), aS=2 * me.alpha_s)
    assert _rel(_evaluate(doubled, p), 16.0 * me(p)) < 1e-10


# -- 2. gauge invariance (Ward identity of an external gluon) -----------------------------------------------
@needs_pyamplicol
def test_ward_identity_gg_to_4b():
    """ε₁ → p₁ (gluon 1's polarisation replaced by its momentum) gives |M|² = 0 to round-off; a generic ε ≠ 0."""
    path = _test_artifact(
        "ward_gg_to_4b_sm", lambda out: [sys.executable, "-c", _GENERATE_WARD, "g g > b b~ b b~", str(out)]
    )
    runtime = _runtime(path)
    masses = _parameters(runtime)
    m_b = masses.get("MB", masses.get("particle.5.mass", 0.0))  # the built-in SM's b is massless
    rng = np.random.default_rng(41)
    p = _points_2to4(rng, rng.uniform(200.0, 2000.0, 4), m_b)
    job = {
        "points": p.tolist(),
        "leg1": {"ward": p[:, 0].tolist(), "generic": [[0.0, 1.0, 0.3, 0.0]] * len(p)},
    }
    with tree_me._cache_lock(tree_me.cache_root()):  # Symbolica: one process at a time
        out = _checked(
            [sys.executable, "-c", _EVALUATE_CORRELATED, str(path)],
            "correlated evaluation",
            stdin=json.dumps(job),
        )
    values = {k: np.asarray(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    assert _rel(values["physical"], _evaluate(runtime, p)) < 1e-10  # correlated "born" = plain |M|²
    assert np.all(values["physical"] > 0)
    ward = np.abs(values["ward"]) / values["physical"]
    assert np.all(ward < 1e-10), ward
    assert np.all(np.abs(values["generic"]) / values["physical"] > 1e-3)


# -- 3. 2 → 2 against the textbook massive formulas ---------------------------------------------------------
def _combridge(name: str, s: np.ndarray, t: np.ndarray, m: float, alpha_s: float) -> np.ndarray:
    """Σ̄|M|² (initial spins and colours averaged) of g g → Q Q̄ or q q̄ → Q Q̄ (Combridge 1979; ESW eq. 10.12).

    τ₁ = (m² − t)/s, τ₂ = (m² − u)/s, ρ = 4m²/s:
    q q̄: g⁴ (4/9)(τ₁² + τ₂² + ρ/2);  g g: g⁴ (1/(6τ₁τ₂) − 3/8)(τ₁² + τ₂² + ρ − ρ²/(4τ₁τ₂)).
    """
    u = 2 * m * m - s - t
    tau1, tau2, rho = (m * m - t) / s, (m * m - u) / s, 4 * m * m / s
    g4 = (4 * np.pi * alpha_s) ** 2
    if name == "qq":
        return g4 * 4 / 9 * (tau1**2 + tau2**2 + rho / 2)
    return g4 * (1 / (6 * tau1 * tau2) - 3 / 8) * (tau1**2 + tau2**2 + rho - rho**2 / (4 * tau1 * tau2))


@needs_pyamplicol
@pytest.mark.parametrize("name, process", [("gg", "g g > b b~"), ("qq", "u u~ > b b~")])
def test_two_to_two_textbook(name, process):
    """g g, u ū → b b̄ in tree_me's UFO sm (m_b = 4.7 GeV, full colour) = Combridge's formulas to 1e-10."""
    model = tree_me._model_path()
    path = _test_artifact(
        f"{name}_to_bb_ufo_sm",
        _cli_generate(process, "--model", str(model), "--restriction", "default", "--color-accuracy", "full"),
    )
    runtime = _runtime(path)
    params = _parameters(runtime)
    assert params["MB"] == 4.7 and params["aS"] == tree_me.ALPHA_S_ARTIFACT
    m = params["MB"]
    sqrt_s = np.array([9.5, 10.0, 12.0, 30.0, 91.0, 250.0, 1000.0, 4000.0])  # from near threshold 9.4 GeV
    cos_t = np.array([-0.99, -0.6, -0.1, 0.0, 0.3, 0.7, 0.95, 0.999])
    ss, cc = (a.ravel() for a in np.meshgrid(sqrt_s, cos_t, indexing="ij"))
    p = _points_2to2(ss, cc, m)
    t = _dot(p[:, 0] - p[:, 2], p[:, 0] - p[:, 2])
    expected = _combridge(name, ss**2, t, m, params["aS"])
    assert _rel(_evaluate(runtime, p), expected) < 1e-10
    # the check can fail: the mass terms matter near threshold (the massless formula is off by O(1) there)
    massless = _combridge(name, ss**2, -0.5 * ss**2 * (1 - cc), 0.0, params["aS"])
    assert _rel(massless, expected) > 0.1


# -- 4. signal triangle vs the HEFT model --------------------------------------------------------------------
@needs_pyamplicol
def test_triangle_matches_heft():
    """hh_amplitude's κλ² (triangle) term, in the heavy-top limit, = pyAmpliCol HEFT g g → h* → h h.

    The HEFT Hgg coupling GH carries the finite-m_t factor K = 1 + 7ρ/120 + ρ²/168 + 13ρ³/16800 (ρ = m_h²/m_t²,
    fixed at q² = m_h², not ŝ), so |M|²_HEFT = 16π ŝ² α_s² T₂ · (2/3)²/|F_△(τ)|² · K² with dσ̂/dt̂ = |M|²/(16πŝ²)
    (the hh identical-particle ½ in both). The minimal coupling order of g g > h h in HEFT is HIG = 2 (t/u-channel
    gluon between two Hgg vertices, no triangle), so the artifact is generated at HIG ≤ 1, QED ≤ 1: s channel only.
    """
    path = _test_artifact(
        "heft_gg_to_hh_triangle",
        _cli_generate(
            "g g > h h",
            "--model",
            "built-in-sm-heft",
            "--color-accuracy",
            "full",
            "--coupling-order-policy",
            "explicit",
            "--max-coupling-order",
            "HIG=1",
            "--max-coupling-order",
            "QED=1",
        ),
    )
    runtime = _runtime(path, Gf=hh.G_F, WH=hh.GAMMA_H, MH=hh.M_H, MT=hh.M_T)
    alpha_s = _parameters(runtime)["aS"]
    m_hh = np.array([255.0, 300.0, 346.0, 400.0, 600.0, 1000.0, 2500.0])
    cos_t = np.array([-0.95, -0.3, 0.2, 0.8])
    mm, cc = (a.ravel() for a in np.meshgrid(m_hh, cos_t, indexing="ij"))
    heft = _evaluate(runtime, _points_2to2(mm, cc, hh.M_H, phi=1.9))
    s = mm**2
    f_tri = hh.triangle_form_factor(s)
    zero = np.zeros_like(s, dtype=np.complex128)
    t2 = hh.dsigma_dt_terms(s, zero, zero, f_tri)[:, 2]
    rho = (hh.M_H / hh.M_T) ** 2
    k_heft = 1 + 7 * rho / 120 + rho**2 / 168 + 13 * rho**3 / 16800
    ours = 16 * np.pi * s**2 * alpha_s**2 * t2 * (2 / 3) ** 2 / np.abs(f_tri) ** 2 * k_heft**2
    ratio = (heft / ours).reshape(len(m_hh), len(cos_t))
    assert np.max(np.abs(ratio - 1)) < 1e-9, ratio
    assert np.max(np.ptp(ratio, axis=1)) < 1e-10  # angle-independent: s-wave h* → hh only
    # at the artifact's own G_F (MadGraph's 1.16639e-5) |M|² ∝ G_F² moves by (1.16639/1.1663787)² − 1 = 1.9e-5
    default = _runtime(path, WH=hh.GAMMA_H, MH=hh.M_H, MT=hh.M_T)
    g_f = _parameters(default)["Gf"]
    assert abs(g_f / hh.G_F - 1) > 1e-6
    assert _rel(_evaluate(default, _points_2to2(mm, cc, hh.M_H, phi=1.9)), heft * (g_f / hh.G_F) ** 2) < 1e-9


# -- 5. error paths ------------------------------------------------------------------------------------------
def test_missing_pyamplicol_names_the_extra(monkeypatch):
    """Without pyAmpliCol: one-line InputError naming the [exact] extra and --background-model approx."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "pyamplicol" else real_find_spec(name, *a, **k),
    )
    for call in (tree_me.require_pyamplicol, tree_me.cache_root, lambda: tree_me.TreeMatrixElement("gg")):
        with pytest.raises(InputError) as info:
            call()
        text = str(info.value)
        assert "[exact]" in text and "--background-model approx" in text and "\n" not in text


def _corrupt(folder: Path, kind: str) -> None:
    manifest, payload = folder / "artifact.json", folder / "evaluators.pacbin"
    if kind == "manifest-truncated":
        manifest.write_bytes(manifest.read_bytes()[:1000])
    elif kind == "manifest-garbage":
        manifest.write_text("not an artifact\n")
    elif kind == "payload-truncated":
        payload.write_bytes(payload.read_bytes()[:4096])
    elif kind == "payload-zeroed":
        data = bytearray(payload.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        payload.write_bytes(bytes(data))
    else:
        payload.unlink()


@needs_pyamplicol
@pytest.mark.parametrize(
    "kind",
    ["manifest-truncated", "manifest-garbage", "payload-truncated", "payload-zeroed", "payload-missing"],
)
def test_corrupted_artifact_is_one_line_input_error(kind, tmp_path, monkeypatch):
    """A damaged cached artifact raises a one-line InputError naming the folder (not another exception type)."""
    source = tree_me.artifact_path("gg")
    monkeypatch.setenv("SPANET2_CACHE_DIR", str(tmp_path))
    copy = tree_me.cache_root() / source.name
    shutil.copytree(source, copy)
    _corrupt(copy, kind)
    with pytest.raises(InputError) as info:
        tree_me.TreeMatrixElement("gg")
    assert type(info.value) is InputError
    text = str(info.value)
    assert "\n" not in text and str(copy) in text and "delete the folder" in text
