"""Matplotlib figures and image grids that runs log as artifacts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # runs are headless; never ask for a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402


LOSS_NAMES = ("loss", "mse", "kl")


def is_loss(quantity: str) -> bool:
    """Tell whether a metric is a loss, which spans decades and reads best on a log axis.

    Accuracies and the discriminator's probabilities (d_real, d_fake) stay on a
    linear axis, since they live between 0 and 1.
    """
    return quantity.endswith(LOSS_NAMES)


def loss_curve_figure(history: Sequence[Mapping[str, float]], *, title: str = "Loss") -> Figure:
    """Plot every `train/…` and `val/…` metric of the history against the epoch.

    Quantities share an axis when their names match (train/loss with val/loss);
    each quantity gets its own panel.
    """
    quantities: list[str] = []
    for record in history:
        for key in record:
            split, _, quantity = key.partition("/")
            if split in ("train", "val") and quantity and quantity not in quantities:
                quantities.append(quantity)
    n_panels = max(len(quantities), 1)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.5 * n_panels, 3.5), squeeze=False)
    for ax, quantity in zip(axes[0], quantities):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(r["epoch"], r[f"{split}/{quantity}"]) for r in history if f"{split}/{quantity}" in r]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.set_title(quantity)
        ax.grid(alpha=0.3)
        ax.legend()
        if is_loss(quantity) and all(value > 0 for r in history for k, value in r.items()
                                     if k.endswith(f"/{quantity}")):
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def to_numpy_images(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Convert (B, 1, 28, 28) or (B, 28, 28) images to uint8 (B, 28, 28)."""
    low, high = value_range
    array = images.detach().float().cpu().reshape(images.shape[0], images.shape[-2], images.shape[-1])
    array = ((array - low) / (high - low)).clamp(0, 1)
    return (array.numpy() * 255).round().astype(np.uint8)


def image_grid(images: torch.Tensor, n_columns: int, *, value_range: tuple[float, float] = (0.0, 1.0),
               padding: int = 2, scale: int = 2) -> Image.Image:
    """Tile images into one greyscale PIL image, `n_columns` wide, upscaled by `scale`."""
    tiles = to_numpy_images(images, value_range)
    n, height, width = tiles.shape
    n_rows = -(-n // n_columns)
    canvas = np.full((n_rows * (height + padding) + padding, n_columns * (width + padding) + padding),
                     255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, n_columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        canvas[top:top + height, left:left + width] = tile
    grid = Image.fromarray(canvas, mode="L")
    if scale != 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return grid


def reconstruction_figure(images: torch.Tensor, reconstructions: torch.Tensor,
                          title: str = "Test images (top) and reconstructions (bottom)") -> Figure:
    """Show test images in the top row and their reconstructions below."""
    originals = to_numpy_images(images)
    outputs = to_numpy_images(reconstructions)
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
    for column in range(n):
        for row, source in enumerate((originals, outputs)):
            ax = axes[row][column]
            ax.imshow(source[column], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("original")
    axes[1][0].set_ylabel("reconstructed")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_figure(counts: np.ndarray, class_names: Sequence[str],
                            title: str = "Test confusion matrix") -> Figure:
    """Draw a seaborn heatmap of `counts[true, predicted]`, annotated with the counts."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=True, ax=ax,
                xticklabels=class_names, yticklabels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def misclassified_figure(images: torch.Tensor, true_labels: Sequence[int], predicted_labels: Sequence[int],
                         class_names: Sequence[str], n_columns: int = 8) -> Figure:
    """Show images with their true and predicted class above each one."""
    tiles = to_numpy_images(images)
    n_rows = max(-(-len(tiles) // n_columns), 1)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(1.7 * n_columns, 2.0 * n_rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= len(tiles):
            ax.axis("off")
            continue
        ax.imshow(tiles[index], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {class_names[true_labels[index]]}\npred {class_names[predicted_labels[index]]}",
                     fontsize=7)
    fig.suptitle("Misclassified test images")
    fig.tight_layout()
    return fig


def score_curve_figure(history: Mapping[str, Sequence[tuple[int, float]]], *,
                       title: str = "Discriminator scores") -> Figure:
    """Plot discriminator scores (mean D(x), mean D(G(z))) against the epoch on one axis.

    `history` maps a metric key such as `train/d_real` to its (epoch, value) pairs.
    A dotted line marks 0.5, where the discriminator cannot tell real from generated.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in history.items():
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, "-s" if key.startswith("val/") else "-o", label=key, markersize=3)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean discriminator output")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def latent_manifold_figure(images: torch.Tensor, z1_values: Sequence[float], z2_values: Sequence[float],
                           *, title: str = "Decoded latent grid") -> Figure:
    """Show images decoded from a regular grid over two latent dimensions.

    `images` is (len(z2_values) * len(z1_values), 1, 28, 28) in row-major order,
    the first row decoded at the largest z2, so that z2 grows upwards as on a plot.
    """
    n_columns = len(z1_values)
    canvas = np.asarray(image_grid(images, n_columns, padding=0, scale=1))
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255,
              extent=(z1_values[0], z1_values[-1], z2_values[0], z2_values[-1]), aspect="auto")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def traversal_figure(images: torch.Tensor, dimensions: Sequence[int], values: Sequence[float], *,
                     title: str = "Latent traversals") -> Figure:
    """Show one row of decoded images per latent dimension, that dimension set to each of `values`.

    `images` is (len(dimensions) * len(values), 1, 28, 28) in row-major order.
    """
    tiles = to_numpy_images(images)
    n_rows, n_columns = len(dimensions), len(values)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(0.9 * n_columns + 0.8, 0.9 * n_rows + 0.8),
                             squeeze=False)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, n_columns)
        ax = axes[row][column]
        ax.imshow(tile, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        if column == 0:
            ax.set_ylabel(f"z{dimensions[row] + 1}", rotation=0, labelpad=14)
        if row == n_rows - 1:
            ax.set_xlabel(f"{values[column]:.2g}")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
