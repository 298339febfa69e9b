"""Latent codes to decode: draws from fitted Gaussians and the bounding box, and interpolations.

The reference workflow decoded codes drawn uniformly over the box that bounds
the training codes. Many of those codes fall between the class clusters and
decode to no garment, so a Gaussian fitted to the codes, or one per class,
draws where the data lies instead.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-6  # added to covariance diagonals so that degenerate codes still factorise


def fit_gaussian(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean and covariance (with a small ridge) of codes (N, D); N ≥ 2."""
    mean = codes.mean(axis=0)
    cov = np.cov(codes, rowvar=False).reshape(codes.shape[1], codes.shape[1])
    return mean, cov + RIDGE * np.eye(codes.shape[1])


def draw_gaussian(codes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `n` codes from a Gaussian fitted to `codes`."""
    mean, cov = fit_gaussian(codes)
    return rng.multivariate_normal(mean, cov, size=n, method="cholesky")


def draw_uniform_box(codes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `n` codes uniformly over the axis-aligned box that bounds `codes`."""
    return rng.uniform(codes.min(axis=0), codes.max(axis=0), size=(n, codes.shape[1]))


def draw_per_class(codes: np.ndarray, labels: np.ndarray, n_per_class: int,
                   rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Draw `n_per_class` codes from a Gaussian fitted to each class; classes with < 2 codes are left out."""
    drawn = {}
    for label in np.unique(labels):
        members = codes[labels == label]
        if len(members) >= 2:
            drawn[int(label)] = draw_gaussian(members, n_per_class, rng)
    return drawn


def pick_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Pick up to `n_pairs` index pairs, of different classes where the labels allow it."""
    n = len(labels)
    if n < 2:
        return []
    pairs = []
    for start in rng.permutation(n)[:n_pairs]:
        others = np.flatnonzero(labels != labels[start])
        if others.size == 0:  # a single class: pair with any other point
            others = np.delete(np.arange(n), start)
        pairs.append((int(start), int(rng.choice(others))))
    return pairs


def interpolate(start: np.ndarray, end: np.ndarray, n_steps: int) -> np.ndarray:
    """Return `n_steps` codes (n_steps, D) on the segment from `start` to `end`, both included."""
    weights = np.linspace(0.0, 1.0, n_steps)[:, None]
    return (1.0 - weights) * start + weights * end

