"""Exact tree-level |M|² of pp → bb̄bb̄ from pyAmpliCol (MadGraph's team's tree amplitudes), cached artifacts.

pyAmpliCol generates a process "artifact" (the compiled helicity/colour recursion of every tree diagram)
from a model; we generate two at first use into a cache folder and load them afterwards:

- ``g g > b b~ b b~`` and ``u u~ > b b~ b b~`` in the shipped UFO ``sm`` model (MadGraph's default
  ``sm``, restriction ``default``: m_b = 4.7 GeV, m_c = 0), **full colour**, QCD only (α_s⁴; the
  electroweak diagrams of the ``sm`` model enter at α_s² α² and higher and are not generated at the
  minimal coupling order, as MadGraph's default ``QED`` order does).
- d d̄, s s̄ and c c̄ → bb̄bb̄ equal u ū → bb̄bb̄ (massless quarks, QCD only: flavour-blind); q̄ q is
  u ū with the incoming momenta swapped.

The returned |M|² is summed over helicities and colours and averaged over the initial ones, with the
identical-particle factor 1/(2! 2!) of the two b and the two b̄ included (pyAmpliCol's convention), at
the artifact's α_s = 0.118; |M|² ∝ α_s⁴ exactly, so callers rescale per event.

Symbolica: generating an artifact runs Symbolica (proprietary; pyAmpliCol ships a package-scoped key,
users remain responsible for a Symbolica use licence); evaluating a generated artifact runs pyAmpliCol's
own f64 runtime. pyAmpliCol is the optional ``[exact]`` extra; without it `require_pyamplicol` raises
an InputError that names the extra and the alternative (``--background-model approx``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from spanet2.errors import InputError

__all__ = [
    "ALPHA_S_ARTIFACT",
    "PROCESSES",
    "cache_root",
    "require_pyamplicol",
    "artifact_path",
    "matrix_element",
    "TreeMatrixElement",
]

logger = logging.getLogger(__name__)

ALPHA_S_ARTIFACT = 0.118  # the UFO sm's aS: |M|² is evaluated at this α_s and rescaled by (α_s/0.118)⁴
PROCESSES = {"gg": "g g > b b~ b b~", "qq": "u u~ > b b~ b b~"}
_MODEL = "sm.pyamplicol-model"
_EXTRA_HINT = (
    "the exact QCD 4b background needs pyAmpliCol: pip install 'spanet2[exact]' (make installs it); "
    "or choose the approximate model with --background-model approx"
)


def require_pyamplicol() -> str:
    """pyAmpliCol's version, or an InputError naming the extra and the alternative (imports nothing)."""
    if importlib.util.find_spec("pyamplicol") is None:
        raise InputError("--background-model", None, _EXTRA_HINT)
    return importlib.metadata.version("pyamplicol")


class _NoSymbolica:
    """Meta-path finder that hides Symbolica while pyAmpliCol's f64 runtime is imported and loaded.

    ``import pyamplicol`` imports Symbolica eagerly, and an unlicensed Symbolica lets one process per user
    run at a time ("restricted mode"), so two generator workers would abort. The f64 evaluation does not
    use Symbolica (pyAmpliCol's notices: the runtime extension does not link it), and pyAmpliCol imports
    without it by design; only artifact *generation* (a separate, locked subprocess) runs Symbolica.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "symbolica" or name.startswith("symbolica."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@contextlib.contextmanager
def _without_symbolica() -> Iterator[None]:
    blocker = _NoSymbolica()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)


def _import_runtime():
    require_pyamplicol()
    if "symbolica" in sys.modules:  # imported by someone else: pyAmpliCol then uses it as it is
        import pyamplicol
    else:
        with _without_symbolica():
            import pyamplicol
    return pyamplicol


@contextlib.contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    """One artifact generation at a time per cache (Symbolica's restricted mode allows one process)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_root() -> Path:
    """Folder of the generated artifacts: $SPANET2_CACHE_DIR, else $XDG_CACHE_HOME/spanet2, else ~/.cache."""
    base = os.environ.get("SPANET2_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spanet2"
    return root / f"pyamplicol-{require_pyamplicol()}"


def _run(args: list[str], what: str) -> None:
    """One pyAmpliCol CLI call (argument list, no shell); a failure is one line naming what failed."""
    result = subprocess.run(
        [sys.executable, "-m", "pyamplicol", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise InputError(what, None, f"pyAmpliCol failed (exit {result.returncode}): {tail}")


def _publish(make, final: Path) -> Path:
    """Build into a temporary sibling with make(tmp), then rename into place (first writer wins)."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        make(tmp / final.name)
        try:
            os.replace(tmp / final.name, final)
        except OSError:
            if not final.exists():  # a concurrent writer that finished first is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _model_path() -> Path:
    """The UFO ``sm`` shipped with pyAmpliCol, compiled once into a prepared kernel bundle."""
    require_pyamplicol()
    source = Path(importlib.util.find_spec("pyamplicol").origin).parent / "assets" / "models" / "ufo" / "sm"
    if not source.is_dir():
        raise InputError(source, None, "pyAmpliCol's shipped UFO model 'sm' is missing; reinstall pyamplicol")

    def make(out: Path) -> None:
        logger.info("compiling pyAmpliCol's UFO sm model (once, ~30 s) into %s", out)
        _run(["model", "compile", str(source), str(out), "--backend", "jit", "--progress", "off"], str(out))

    return _publish(make, cache_root() / _MODEL)


def artifact_path(name: str) -> Path:
    """The generated artifact of PROCESSES[name] (generated at first use, ~10–20 s)."""
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; expected one of {sorted(PROCESSES)}")
    root = cache_root()
    final = root / f"{name}_to_4b_full_colour"
    if (final / "artifact.json").exists():
        return final
    with _cache_lock(root):
        return _publish(lambda out: _generate(name, _model_path(), out), final)


def _generate(name: str, model: Path, out: Path) -> None:
    logger.info("generating the pyAmpliCol artifact %r (once, ~10–20 s) into %s", PROCESSES[name], out)
    _run(
        [
            "generate",
            PROCESSES[name],
            str(out),
            "--model",
            str(model),
            "--restriction",
            "default",
            "--color-accuracy",
            "full",
            "--progress",
            "off",
        ],
        str(out),
    )


class TreeMatrixElement:
    """|M|² of one generated process; `__call__` takes (N, 6, 4) momenta (E, px, py, pz) in GeV."""

    def __init__(self, name: str):
        path = artifact_path(name)
        pyamplicol = _import_runtime()
        try:
            with _without_symbolica():
                self.runtime = pyamplicol.Runtime.load(path)
                self.runtime.evaluate(np.ones((1, 6, 4)))  # lazy parts load now, still without Symbolica
        except Exception as exc:  # noqa: BLE001 - any failure to open is a broken cache entry
            raise InputError(
                path, None, f"cannot load the pyAmpliCol artifact ({exc}); delete the folder to regenerate it"
            ) from None
        self.name = name
        self.pdg = tuple(p.pdg_id for p in self.runtime.physics.external_particles)
        params = {p.name: p.default_real for p in self.runtime.physics.model_parameters}
        self.m_b = float(params.get("MB", 0.0))
        self.alpha_s = float(params.get("aS", ALPHA_S_ARTIFACT))

    def __call__(self, momenta: np.ndarray) -> np.ndarray:
        """(N,) |M|² (GeV^(2·(4−n)) = GeV⁻⁴ for 2 → 4) at the artifact's α_s; zero rows give zero."""
        momenta = np.ascontiguousarray(momenta, dtype=np.float64)  # (N, 6, 4)
        if len(momenta) == 0:
            return np.zeros(0)
        values = np.asarray(self.runtime.evaluate(momenta))
        return np.real(values).astype(np.float64)


@lru_cache(maxsize=4)
def matrix_element(name: str) -> TreeMatrixElement:
    """The process-wide TreeMatrixElement of PROCESSES[name] (loaded once per process)."""
    return TreeMatrixElement(name)
