"""Two-dimensional views of latent codes: PCA, t-SNE (openTSNE) and UMAP.

Each method clamps its neighbourhood size to what the number of points allows
and returns `None` when it cannot run at all, so that a tiny subset still gets
the views that do work. Every result is deterministic for a given seed.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from research.data import cache_dir

logger = logging.getLogger(__name__)

METHODS = ("pca", "tsne", "umap")
METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}

# Minimum number of points per method. UMAP's spectral initialisation fails on
# 3 points or fewer (umap-learn 0.5.12), and two points already make a PCA or t-SNE view.
MIN_POINTS = {"pca": 2, "tsne": 2, "umap": 4}
# sklearn's trustworthiness builds the full pairwise distance matrix, so it runs
# on a subsample: 2,000 points need 32 MB where 10,000 would need 800 MB.
MAX_TRUSTWORTHINESS_POINTS = 2000
TRUSTWORTHINESS_NEIGHBORS = 5
FFT_MIN_POINTS = 10_000  # t-SNE switches from Barnes-Hut to FFT gradients at this size
FFT_INTERPOLATION_POINTS = 2
UMAP_SHORT_LAYOUT_POINTS = 10_000  # UMAP runs 200 layout epochs from this size on


@dataclass
class Embedding:
    """A 2-D view of the codes, with the settings that produced it and their effect."""

    method: str
    points: np.ndarray  # (N, 2)
    seconds: float
    settings: dict[str, float] = field(default_factory=dict)  # effective values, logged as metrics
    trustworthiness: float | None = None


def n_workers() -> int:
    """Return the number of CPU cores this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def clamp_perplexity(perplexity: float, n_points: int) -> float:
    """Return the largest usable perplexity up to `perplexity` for `n_points`.

    openTSNE takes 3 × perplexity nearest neighbours, which must be fewer than
    the other points, so the bound is (n - 1) / 3, and 1 at the least.
    """
    return float(max(1.0, min(perplexity, (n_points - 1) / 3)))


def clamp_n_neighbors(n_neighbors: int, n_points: int) -> int:
    """Return the largest usable UMAP neighbourhood up to `n_neighbors`: at most n - 1, at least 2."""
    return int(max(2, min(n_neighbors, n_points - 1)))


def pca_view(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the 2-D PCA projection (N, 2) and the explained-variance ratio of every component.

    Codes of one dimension get a zero second coordinate so that they still plot.
    """
    from sklearn.decomposition import PCA

    n_components = min(codes.shape)
    pca = PCA(n_components=n_components, svd_solver="full").fit(codes)
    points = pca.transform(codes)[:, :2]
    if points.shape[1] < 2:
        points = np.column_stack([points, np.zeros(len(points))])
    return points, pca.explained_variance_ratio_


def components_for_variance(ratios: np.ndarray, share: float = 0.9) -> int:
    """Return how many leading components explain at least `share` of the variance."""
    cumulative = np.cumsum(ratios)
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return 0
    return int(np.searchsorted(cumulative / cumulative[-1], share - 1e-12) + 1)


def tsne_view(codes: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, float]:
    """Return the openTSNE embedding (N, 2) and the perplexity it used.

    openTSNE runs its gradients on several threads, and PCA initialisation
    keeps the global arrangement of the clusters more stable than a random
    start does.
    """
    from openTSNE import TSNE

    effective = clamp_perplexity(perplexity, len(codes))
    # FFT gradients have a fixed cost per iteration that dominates on small sets:
    # on 300 codes, openTSNE 1.0.4 took 3 s of CPU with Barnes-Hut and 19 s with FFT.
    method = "fft" if len(codes) >= FFT_MIN_POINTS else "bh"
    # Two interpolation points per grid cell instead of openTSNE's three: on
    # 10,000 autoencoder codes this took the fit from 56 s to 21 s on 2 cores,
    # with the same trustworthiness (0.997) and no visible change in the map.
    fft_settings = {"n_interpolation_points": FFT_INTERPOLATION_POINTS} if method == "fft" else {}
    tsne = TSNE(perplexity=effective, initialization="pca", negative_gradient_method=method,
                n_jobs=n_workers(), random_state=seed, verbose=False, **fft_settings)
    return np.asarray(tsne.fit(codes.astype(np.float64))), effective


def umap_view(codes: np.ndarray, n_neighbors: int, seed: int) -> tuple[np.ndarray, int]:
    """Return the UMAP embedding (N, 2) and the number of neighbours it used."""
    # numba compiles UMAP's kernels on first use in a process. With a cache
    # folder, later processes load the kernels marked cache=True instead. numba
    # reads the variable when it is first imported.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    import umap

    effective = clamp_n_neighbors(n_neighbors, len(codes))
    # umap-learn 0.5 runs 500 layout epochs up to 10,000 points and 200 above.
    # The whole test set is exactly 10,000 points. On 10,000 synthetic 9-d points,
    # 200 epochs took 5.6 s of CPU instead of 13.4 s.
    n_epochs = 200 if len(codes) >= UMAP_SHORT_LAYOUT_POINTS else None
    # A fixed random_state makes UMAP deterministic and single-threaded.
    reducer = umap.UMAP(n_neighbors=effective, n_components=2, n_epochs=n_epochs, random_state=seed, n_jobs=1,
                        low_memory=True, precomputed_knn=exact_neighbors(codes, effective))
    with warnings.catch_warnings():
        # Without pynndescent's search index UMAP warns that it cannot transform
        # new points; the view never does.
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return np.asarray(reducer.fit_transform(codes)), effective


def exact_neighbors(codes: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray, None]:
    """Return the exact nearest neighbours of every code, itself included, as UMAP takes them.

    Latent codes have few dimensions, so an exact search takes a fraction of a
    second. pynndescent's approximate search compiles anew in every process: on
    10,000 codes the UMAP view took 47 s with it and 11 s with this.
    """
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=n_neighbors).fit(codes)
    distances, indices = search.kneighbors(codes)
    return indices, distances.astype(np.float32), None


def trustworthiness(codes: np.ndarray, points: np.ndarray, seed: int) -> float | None:
    """Return sklearn's trustworthiness of a view, on a seeded subsample; None below 3 points."""
    from sklearn.manifold import trustworthiness as sklearn_trustworthiness

    n = len(codes)
    if n > MAX_TRUSTWORTHINESS_POINTS:
        chosen = np.random.default_rng(seed).choice(n, MAX_TRUSTWORTHINESS_POINTS, replace=False)
        codes, points, n = codes[chosen], points[chosen], MAX_TRUSTWORTHINESS_POINTS
    # sklearn requires n_neighbors < n / 2.
    n_neighbors = min(TRUSTWORTHINESS_NEIGHBORS, (n - 1) // 2)
    if n_neighbors < 1:
        return None
    return float(sklearn_trustworthiness(codes, points, n_neighbors=n_neighbors))


def embed(codes: np.ndarray, method: str, *, perplexity: float = 30.0, n_neighbors: int = 15,
          seed: int = 0) -> Embedding | None:
    """Compute one 2-D view of `codes` (N, D); return None, with a log message, below its minimum N."""
    import time

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    n_points = len(codes)
    if n_points < MIN_POINTS[method]:
        logger.info("Skipping %s: it needs at least %d points, got %d", METHOD_TITLES[method],
                    MIN_POINTS[method], n_points)
        return None
    started = time.perf_counter()
    settings: dict[str, float] = {}
    if method == "pca":
        points, _ = pca_view(codes)
    elif method == "tsne":
        points, settings["tsne_perplexity"] = tsne_view(codes, perplexity, seed)
    else:
        points, settings["umap_n_neighbors"] = umap_view(codes, n_neighbors, seed)
    seconds = time.perf_counter() - started
    score = trustworthiness(codes, points, seed) if method != "pca" else None
    return Embedding(method, points, seconds, settings, score)
