"""PCA of SPANet2 event vectors: explained variance and correlation with high-level observables (note Figs. 7–9)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingPCA", "embedding_pca", "plot_explained_variance", "plot_pc_correlations"]


@dataclass(frozen=True)
class EmbeddingPCA:
    """explained_variance_ratio: (K,) first K components (± explained_variance_ratio_err). correlations:
    {"all"|"signal"|"background": (3, F)} Pearson correlation of the first three principal components with each
    high-level observable."""

    explained_variance_ratio: np.ndarray
    feature_names: tuple[str, ...]
    correlations: dict[str, np.ndarray]
    n_events: int
    #: σ of each explained variance ratio: the spread over bootstrap replicas of the events (None: not computed)
    explained_variance_ratio_err: np.ndarray | None = None
    #: events behind each correlation table (σ of a Pearson r is ≈ (1 − r²)/√n)
    correlation_events: dict[str, int] | None = None


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of every column of a (N, A) with every column of b (N, B) -> (A, B); 0 for constant columns."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.sqrt((a**2).sum(axis=0))
    nb = np.sqrt((b**2).sum(axis=0))
    cov = a.T @ b
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cov / np.outer(na, nb)
    return np.nan_to_num(out, nan=0.0)


def explained_variance_sigma(vectors: np.ndarray, k: int, *, n_boot: int = 50, seed: int = 0) -> np.ndarray:
    """σ of the first k explained variance ratios: the sample std over `n_boot` bootstrap replicas of the events
    (each replica's ratios from the eigenvalues of its covariance, as PCA's). The loop is over replicas."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    if n < 3 or n_boot < 2:
        return np.full(k, np.nan)
    rng = np.random.default_rng(seed)
    ratios = np.empty((n_boot, k))
    for b in range(n_boot):
        eig = np.linalg.eigvalsh(np.cov(vectors[rng.integers(0, n, n)], rowvar=False))[::-1]
        ratios[b] = eig[:k] / eig.sum()
    return ratios.std(axis=0, ddof=1)


def embedding_pca(vectors: np.ndarray, features: np.ndarray, feature_names, labels: np.ndarray,
                  *, n_components: int = 10, seed: int = 0, n_boot: int = 50) -> EmbeddingPCA:
    """Fit PCA on all event vectors (N, D); correlate PCs 1–3 with features (N, F) for all/signal/background;
    σ of the explained variance ratios from `n_boot` bootstrap replicas."""
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64)
    k = int(min(n_components, vectors.shape[1], vectors.shape[0]))
    pca = PCA(n_components=k, random_state=seed)
    scores = pca.fit_transform(vectors)  # (N, k)
    pcs = scores[:, : min(3, k)]
    labels = np.asarray(labels)
    corr = {"all": _pearson(pcs, features)}
    events = {"all": len(vectors)}
    for name, sel in (("signal", labels == 1), ("background", labels == 0)):
        if sel.sum() > 2:
            corr[name] = _pearson(pcs[sel], features[sel])
            events[name] = int(sel.sum())
    err = explained_variance_sigma(vectors, k, n_boot=n_boot, seed=seed)
    return EmbeddingPCA(pca.explained_variance_ratio_, tuple(feature_names), corr, len(vectors), err, events)


def plot_explained_variance(result: EmbeddingPCA, path_stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    k = len(result.explained_variance_ratio)
    ax.bar(np.arange(1, k + 1), result.explained_variance_ratio, color="tab:blue",
           yerr=result.explained_variance_ratio_err, capsize=3, ecolor="0.2")  # bootstrap σ
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax.set_xticks(np.arange(1, k + 1))
    ax.set_title(f"PCA of SPANet2 event vectors ({result.n_events} events)")
    return _save(fig, path_stem)


def plot_pc_correlations(result: EmbeddingPCA, path_stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("all", "signal", "background") if k in result.correlations]
    fig, axes = plt.subplots(len(keys), 1, figsize=(max(8, 0.45 * len(result.feature_names)), 2.2 * len(keys) + 1),
                             squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        c = result.correlations[key]
        im = ax.imshow(c, vmin=-1, vmax=1, cmap="RdBu_r", aspect="auto")
        ax.set_yticks(range(c.shape[0]), [f"PC{i + 1}" for i in range(c.shape[0])])
        ax.set_xticks(range(len(result.feature_names)), result.feature_names, rotation=70, fontsize=7)
        n = (result.correlation_events or {}).get(key)
        ax.set_title(f"{key} events" + (f" ({n}; σ(r) ≤ 1/√n = {1 / np.sqrt(n):.3f})" if n else ""))
        fig.colorbar(im, ax=ax, fraction=0.02)
    fig.tight_layout()
    return _save(fig, path_stem)


def _save(fig, path_stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".pdf"):
        p = path_stem.with_suffix(ext)
        fig.savefig(p, dpi=110, bbox_inches="tight")
        out.append(p)
    plt.close(fig)
    return out
