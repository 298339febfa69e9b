"""Latent exploration time on test codes: PCA, t-SNE, UMAP, probes and figures.

The exploration runs once, in this process, as `research run` runs it after
training: UMAP's numba compilation on first use is part of the figure.
"""

from __future__ import annotations

from benchmarks.common import SIZES, Result
from research.data import load
from research.latent.explore import ExploreOptions, explore
from research.runner import RunOptions, train
from research.spec import build_spec
from research.tracking import OfflineRun

PHASES = ("encode", "pca", "tsne", "umap", "probes", "generation", "figures")


def run(size_name: str = "full") -> Result:
    size = SIZES[size_name]
    # The codes only need to be those of a trained model; one epoch is enough for timing.
    spec = build_spec("ae", {"n_epochs": 1, "train_size": size.train_size})
    data = load(train_size=size.train_size)
    model = train(spec, RunOptions(quiet=True, track=False), data=data).fit.model
    metrics = explore(OfflineRun(), model, data, ExploreOptions(n_samples=size.n_codes), seed=0)
    rows = [[phase, f"{metrics[f'latent/time_{phase}_s']:.1f} s"] for phase in PHASES
            if f"latent/time_{phase}_s" in metrics]
    rows.append(["**total**", f"**{metrics['latent/time_total_s']:.1f} s**"])
    return Result(
        name="latent", title="Latent exploration time", columns=["phase", "time"], rows=rows, size=size_name,
        notes=[f"{size.n_codes:,} test codes of the default `ae` (latent_dim 9), one run in a fresh process, "
               "so UMAP's first-call compilation is included. `encode` also encodes the "
               f"{(size.train_size or 48_000):,} training images for the probes. t-SNE is openTSNE with PCA "
               "initialisation; UMAP is umap-learn. Target: ≤ 60 s in total for 10,000 codes."])
