"""Figures of the latent exploration; the numbers behind them come from the sibling modules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from research.data import CLASS_NAMES
from research.figures import image_grid

TILE = 28
PADDING = 2


@dataclass
class ImagePanel:
    """Decoded images shown as one grid, `n_columns` wide, with optional labels for its rows."""

    title: str
    images: torch.Tensor  # (N, 1, 28, 28) in [0, 1]
    n_columns: int
    row_labels: Sequence[str] = ()


def pca_variance_figure(ratios: np.ndarray, n_components_90: int) -> Figure:
    """Plot each PCA component's explained variance ratio and their cumulative sum."""
    import matplotlib.pyplot as plt

    components = np.arange(1, len(ratios) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(components, ratios, color="tab:blue", alpha=0.6, label="per component")
    ax.plot(components, np.cumsum(ratios), "-o", color="tab:orange", markersize=4, label="cumulative")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=1, label="90 %")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax.set_xticks(components)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"PCA of the latent codes: {n_components_90} of {len(ratios)} components explain 90 %")
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def scatter_figure(points: np.ndarray, labels: np.ndarray, title: str, axis_labels: Sequence[str] = ("", "")
                   ) -> Figure:
    """Scatter a 2-D view (N, 2), coloured by class, with the class names in the legend."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    names = np.asarray(CLASS_NAMES)[labels]
    present = [name for name in CLASS_NAMES if name in set(names)]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    size = 40  # marker area in points², smaller as the points crowd
    if len(points) > 2000:
        size = 3
    elif len(points) > 200:
        size = 12
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=names, hue_order=present,
                    palette=sns.color_palette("tab10", len(CLASS_NAMES))[:len(present)], s=size,
                    linewidth=0, alpha=0.8, ax=ax)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2, frameon=False)
    fig.tight_layout()
    return fig


def image_panels_figure(panels: Sequence[ImagePanel], title: str) -> Figure:
    """Show grids of decoded images side by side, each titled, rows labelled where given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 5.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        grid = np.asarray(image_grid(panel.images, panel.n_columns, padding=PADDING, scale=1))
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xticks([])
        rows = np.arange(len(panel.row_labels))
        ax.set_yticks(PADDING + rows * (TILE + PADDING) + TILE / 2, list(panel.row_labels), fontsize=8)
        ax.tick_params(length=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def interpolation_figure(strips: torch.Tensor, pair_labels: Sequence[str]) -> Figure:
    """Show one row per interpolation strip (P, S, 1, 28, 28), labelled with its two classes."""
    n_pairs, n_steps = strips.shape[:2]
    panel = ImagePanel("", strips.reshape(n_pairs * n_steps, *strips.shape[2:]), n_steps, pair_labels)
    fig = image_panels_figure([panel], "Decoded codes on the segment between the codes of two test images")
    fig.set_size_inches(0.9 * n_steps + 2.5, 0.9 * n_pairs + 1.2)
    fig.tight_layout()
    return fig
