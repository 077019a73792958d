"""Figures of a run: training curves, confusion matrix and errors per class, data-set overview."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .errors import atomic_write_bytes  # noqa: E402


def png_bytes(fig, run_id: str | None = None, dpi: int = 110, tight: bool = True) -> bytes:
    """Render a figure to PNG (closing it), with the run id as a text chunk when given. `tight`
    crops to the drawn content, which costs a second draw: figures laid out exactly skip it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                metadata={"run_id": run_id} if run_id else None)
    plt.close(fig)
    return buf.getvalue()


def array_png_bytes(rgb: np.ndarray, run_id: str | None = None) -> bytes:
    """uint8 (H, W, 3) pixels as PNG, exactly, with the run id in the same text chunk."""
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    if run_id:
        info.add_text("run_id", run_id)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_run_id(path: Path) -> str | None:
    """The run id a PNG of ours carries (None when it has none or is unreadable)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.text.get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def save(fig, path: Path, run_id: str | None = None, dpi: int = 110) -> None:
    """Render to PNG and write it atomically."""
    atomic_write_bytes(Path(path), png_bytes(fig, run_id, dpi))


def plot_curves(history: list[dict], path: Path, run_id: str | None = None) -> None:
    """Accuracy and loss per epoch, train and test, as in the seed's plot."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    evaluated = [h for h in history if h.get("test_accuracy") is not None]
    for ax, key, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot([h["epoch"] for h in evaluated], [h[f"test_{key}"] for h in evaluated], "s-",
                label="test")
        ax.set(title=title, xlabel="epoch", yscale="log" if key == "loss" else "linear")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    save(fig, path, run_id)


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
    save(fig, path, run_id)


def plot_overview(images: np.ndarray, labels: np.ndarray, classes: list[str], path: Path,
                  per_class: int = 10, seed: int = 0, run_id: str | None = None) -> None:
    """`per_class` random training images of each class, one row per class."""
    rng = np.random.default_rng(seed)
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
    save(fig, path, run_id)


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
    save(fig, path)
