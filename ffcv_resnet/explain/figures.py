"""Figures of explain: the confusion matrix with errors per class, the data-set overview, and a
captioned image grid (reproduce's always-wrong page)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..png import plt, save_figure


def plot_summary(confusion: np.ndarray, classes: list[str], path: Path,
                 run_id: str | None = None) -> None:
    """Confusion matrix (rows true, columns predicted) and errors per true class."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    im = ax1.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax1.text(j, i, str(v), ha="center", va="center", fontsize=7,
                 color="white" if v > confusion.max() / 2 else "black")
    ax1.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted",
            ylabel="true", title="Confusion matrix (test)")
    ax1.set_xticklabels(classes, rotation=45, ha="right")
    ax1.set_yticklabels(classes)
    fig.colorbar(im, ax=ax1, fraction=0.046)
    errors = confusion.sum(1) - np.diag(confusion)
    ax2.barh(classes, errors, color="tab:red")
    ax2.invert_yaxis()
    ax2.set(title=f"Errors per true class ({errors.sum()} in all)", xlabel="errors")
    for y, v in enumerate(errors):
        ax2.text(v, y, f" {v}", va="center")
    save_figure(fig, path, run_id)


OVERVIEW_SEED = 0  # the overview's picks, fixed: the same images every pass


def plot_overview(images: np.ndarray, labels: np.ndarray, classes: list[str], path: Path,
                  per_class: int = 10, run_id: str | None = None) -> None:
    """`per_class` random training images of each class, one row per class."""
    rng = np.random.default_rng(OVERVIEW_SEED)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class, len(classes) * 1.05))
    for c, row in enumerate(np.atleast_2d(axes)):
        pool = np.flatnonzero(labels == c)
        picks = rng.choice(pool, min(per_class, len(pool)), replace=False) if len(pool) else []
        for k, ax in enumerate(row):
            ax.axis("off")
            if k < len(picks):
                ax.imshow(images[picks[k]], interpolation="nearest")
        row[0].text(-0.15, 0.5, classes[c], transform=row[0].transAxes, ha="right",
                    va="center", fontsize=9)
    fig.suptitle("CIFAR-10 training images, 10 random per class")
    save_figure(fig, path, run_id)


def plot_image_grid(images: np.ndarray, captions: list[str], title: str, path: Path,
                    cols: int = 8) -> None:
    """Images (N, 32, 32, 3) uint8 in a grid, each with its caption (an empty grid says so)."""
    rows = max(1, -(-len(captions) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    if not captions:
        axes[0, 0].text(0, 0.5, "none", fontsize=12)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
