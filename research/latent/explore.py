"""Run the whole latent exploration of a trained model and log it to its MLflow run.

Everything goes under `latent/` in the run: metrics `latent/<quantity>` and
figures `latent/<name>.png`. What runs depends only on the model's
capabilities: `has_encoder` (views and probes), a `decode` method
(generation from codes and interpolations) and `can_generate` (the model's
own `sample`, the prior of a VAE).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from research.data import CLASS_NAMES, FashionMNIST, Split
from research.errors import UsageError
from research.latent import generation
from research.latent.embedding import METHOD_TITLES, METHODS, components_for_variance, embed, n_workers, pca_view
from research.latent.plots import (
    ImagePanel,
    image_panels_figure,
    interpolation_figure,
    pca_variance_figure,
    scatter_figure,
)
from research.latent.probes import probe_accuracies
from research.tracking import Run

if TYPE_CHECKING:
    from research.runner import FinishedTraining

logger = logging.getLogger(__name__)

ENCODE_BATCH_SIZE = 1024
N_GENERATED = 80  # codes per panel of the generation figure (10 rows of 8)
N_INTERPOLATIONS = 8
N_INTERPOLATION_STEPS = 10


@dataclass(frozen=True)
class ExploreOptions:
    """Settings of a latent exploration: the number of test codes, the 2-D views and their neighbourhood sizes."""

    n_samples: int | None = None  # test images to encode; None encodes the whole test set
    methods: tuple[str, ...] = METHODS
    perplexity: float = 30.0  # t-SNE; lowered to what the number of points allows
    n_neighbors: int = 15  # UMAP; lowered to what the number of points allows

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown:
            raise UsageError(f"unknown latent view {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if self.n_samples is not None and self.n_samples < 1:
            raise UsageError(f"n_samples must be at least 1, got {self.n_samples}")
        if self.perplexity <= 0:
            raise UsageError(f"perplexity must be positive, got {self.perplexity}")
        if self.n_neighbors < 2:
            raise UsageError(f"n_neighbors must be at least 2, got {self.n_neighbors}")


@dataclass
class Codes:
    """Latent codes (N, D) of one split with their labels (N,)."""

    codes: np.ndarray
    labels: np.ndarray


class Timer:
    """Seconds spent per phase, reported as `latent/time_<phase>_s`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"time_{name}_s": seconds for name, seconds in self.seconds.items()}


@torch.no_grad()
def encode_split(model: Any, split: Split, indices: np.ndarray | None = None) -> Codes:
    """Encode the images of `split` (all, or those at `indices`) in batches."""
    images = split.images if indices is None else split.images[torch.as_tensor(indices)]
    labels = split.labels if indices is None else split.labels[torch.as_tensor(indices)]
    chunks = []
    for start in range(0, len(images), ENCODE_BATCH_SIZE):
        batch = images[start:start + ENCODE_BATCH_SIZE].unsqueeze(1).float().div_(255.0)
        chunks.append(model.encode(batch.to(model.device)).float().cpu())
    codes = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return Codes(codes.reshape(len(images), -1).numpy().astype(np.float64), labels.numpy())


def choose_test_indices(n_test: int, n_samples: int | None, seed: int) -> np.ndarray | None:
    """Return a seeded random subset of test indices (sorted), or None for the whole test set."""
    if n_samples is None or n_samples >= n_test:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_test, n_samples, replace=False))


def explore(run: Run, model: Any, data: FashionMNIST, options: ExploreOptions | None = None, *,
            seed: int = 0, step: int = 0) -> dict[str, float]:
    """Encode the data, log views, probes and generation figures to `run`, and return the metrics.

    Metrics are logged at `step` (the epoch of the weights explored) under
    `latent/`; the returned dict has the same keys.
    """
    options = options or ExploreOptions()
    if not getattr(model, "has_encoder", False):
        raise UsageError(f"model {getattr(model, 'name', type(model).__name__)!r} has no encoder, so it has "
                         "no latent space to explore; explore a run of a model with an encoder (ae, vae)")
    timer = Timer()
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with timer.phase("encode"):
            test = encode_split(model, data.test, choose_test_indices(len(data.test), options.n_samples, seed))
            train = encode_split(model, data.train)
        logger.info("Exploring %d test codes of dimension %d (%s)", len(test.codes), test.codes.shape[1],
                    ", ".join(options.methods))
        metrics = {"n_samples": float(len(test.codes))}
        embeddings = log_views(run, test, options, seed, timer, metrics)
        with timer.phase("probes"):
            metrics.update(probe_accuracies(train.codes, train.labels, test.codes, test.labels, n_workers()))
        if callable(getattr(model, "decode", None)):
            with timer.phase("generation"):
                log_generation(run, model, train, test, seed)
        if getattr(model, "can_generate", False):
            with timer.phase("generation"):
                log_model_samples(run, model, seed)
        log_codes(run, test, embeddings)
    finally:
        model.train(was_training)
    metrics.update(timer.metrics())
    metrics["time_total_s"] = time.perf_counter() - started
    latent_metrics = {f"latent/{key}": value for key, value in metrics.items()}
    run.log_metrics(latent_metrics, step=step)
    logger.info("Latent exploration took %.1f s: %s", metrics["time_total_s"], "  ".join(
        f"{key} {value:.4g}" if key != "latent/n_samples" else f"{key} {int(value)}"
        for key, value in latent_metrics.items() if not key.startswith("latent/time_")))
    return latent_metrics


def log_views(run: Run, test: Codes, options: ExploreOptions, seed: int, timer: Timer,
              metrics: dict[str, float]) -> dict[str, np.ndarray]:
    """Log the PCA variance curve and a class-coloured scatter per method; return the 2-D points."""
    codes, labels = test.codes, test.labels
    axis_labels = {method: (f"{METHOD_TITLES[method]} 1", f"{METHOD_TITLES[method]} 2") for method in METHODS}
    if len(codes) >= 2:
        with timer.phase("pca"):
            _, ratios = pca_view(codes)
        metrics["pca_components_90"] = float(components_for_variance(ratios))
        shares = list(ratios[:2]) + [0.0] * (2 - len(ratios[:2]))
        axis_labels["pca"] = tuple(f"principal component {index + 1} ({100 * share:.0f} % of the variance)"
                                   for index, share in enumerate(shares))
        with timer.phase("figures"):
            run.log_figure(pca_variance_figure(ratios, int(metrics["pca_components_90"])),
                           "latent/pca_variance.png")
    embeddings = {}
    for method in options.methods:
        started = time.perf_counter()
        view = embed(codes, method, perplexity=options.perplexity, n_neighbors=options.n_neighbors, seed=seed)
        if view is None:
            continue
        timer.seconds[method] = time.perf_counter() - started  # a skipped view reports no time
        embeddings[method] = view.points
        metrics.update(view.settings)
        if view.trustworthiness is not None:
            metrics[f"{method}_trustworthiness"] = view.trustworthiness
        with timer.phase("figures"):
            title = f"{METHOD_TITLES[method]} of {len(codes)} test codes ({codes.shape[1]}-d)"
            settings = ", ".join(f"{key.partition('_')[2]} {value:g}" for key, value in view.settings.items())
            run.log_figure(scatter_figure(view.points, labels, title + (f", {settings}" if settings else ""),
                                          axis_labels[method]), f"latent/{method}.png")
    return embeddings


def log_codes(run: Run, test: Codes, embeddings: dict[str, np.ndarray]) -> None:
    """Log the test codes, their labels and every 2-D view as `latent/codes.npz` for later analysis."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, codes=test.codes.astype(np.float32), labels=test.labels,
                        **{method: points.astype(np.float32) for method, points in embeddings.items()})
    run.log_bytes(buffer.getvalue(), "latent/codes.npz")


@torch.no_grad()
def decode(model: Any, codes: np.ndarray) -> torch.Tensor:
    """Decode codes (N, D) to images (N, 1, 28, 28) on the CPU."""
    return model.decode(torch.as_tensor(codes, dtype=torch.float32, device=model.device)).float().cpu()


def log_generation(run: Run, model: Any, train: Codes, test: Codes, seed: int) -> None:
    """Log decoded draws (uniform box, one Gaussian, one Gaussian per class) and interpolations."""
    rng = np.random.default_rng(seed)
    if len(train.codes) >= 2:
        uniform = generation.draw_uniform_box(train.codes, N_GENERATED, rng)
        gaussian = generation.draw_gaussian(train.codes, N_GENERATED, rng)
        per_class = generation.draw_per_class(train.codes, train.labels, N_GENERATED // 10, rng)
        class_codes = np.concatenate(list(per_class.values()))
        panels = [ImagePanel("uniform over the bounding box", decode(model, uniform), 8),
                  ImagePanel("one Gaussian fitted to the codes", decode(model, gaussian), 8),
                  ImagePanel("one Gaussian per class", decode(model, class_codes), N_GENERATED // 10,
                             [CLASS_NAMES[label] for label in per_class])]
        run.log_figure(image_panels_figure(panels, "Images decoded from codes drawn three ways "
                                                   "(box and Gaussians fitted to the training codes)"),
                       "latent/generation.png")
    else:
        logger.info("Skipping generation from fitted codes: it needs at least 2 training codes, got %d",
                    len(train.codes))
    pairs = generation.pick_pairs(test.labels, N_INTERPOLATIONS, rng)
    if pairs:
        strips = np.stack([generation.interpolate(test.codes[a], test.codes[b], N_INTERPOLATION_STEPS)
                           for a, b in pairs])  # (P, S, D)
        images = decode(model, strips.reshape(-1, strips.shape[-1]))
        labels = [f"{CLASS_NAMES[test.labels[a]]} → {CLASS_NAMES[test.labels[b]]}" for a, b in pairs]
        run.log_figure(interpolation_figure(images.reshape(len(pairs), N_INTERPOLATION_STEPS, *images.shape[1:]),
                                            labels), "latent/interpolations.png")


def log_model_samples(run: Run, model: Any, seed: int) -> None:
    """Log a grid of the model's own samples (the fitted Gaussian of `ae`, the prior of a VAE)."""
    images = model.sample(N_GENERATED, generator=torch.Generator().manual_seed(seed)).float().cpu()
    panel = ImagePanel(f"{N_GENERATED} samples", images, 10)
    run.log_figure(image_panels_figure([panel], f"model.sample() of {getattr(model, 'name', 'the model')}"),
                   "latent/model_samples.png")


def explore_finisher(options: ExploreOptions | None = None) -> Any:
    """Return a `research.runner` finisher that explores the trained model at its best epoch."""

    def finish(finished: FinishedTraining) -> None:
        explore(finished.run, finished.model, finished.data, options, seed=finished.spec.seed,
                step=finished.fit.state.best_epoch)

    return finish
