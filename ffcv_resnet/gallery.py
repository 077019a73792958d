"""Gallery of test errors: pages of (image | predicted-class map | true-class map) tiles, a manifest
and a small HTML report that links everything."""
from __future__ import annotations

import csv
import html
import io
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from .errors import atomic_write_bytes
from .figures import png_bytes, plt

SCALE = 3  # pixels per CIFAR pixel in a tile


@dataclass
class Explained:
    """Every error of a run with its maps, sorted from the most confident mistake."""
    index: np.ndarray  # (N,) dataset index in the test split
    true: np.ndarray  # (N,)
    predicted: np.ndarray  # (N,)
    p_pred: np.ndarray  # (N,)
    p_true: np.ndarray  # (N,)
    images: np.ndarray  # (N, 32, 32, 3) uint8
    pred_maps: np.ndarray  # (N, 32, 32) in [0, 1]
    true_maps: np.ndarray  # (N, 32, 32) in [0, 1]
    pred_empty: np.ndarray  # (N,) bool
    true_empty: np.ndarray  # (N,) bool

    @classmethod
    def none(cls) -> "Explained":
        """A run without errors."""
        i, p, m = np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 32, 32))
        return cls(i, i, i, p, p, np.zeros((0, 32, 32, 3), np.uint8), m, m,
                   np.zeros(0, bool), np.zeros(0, bool))


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A jet-coloured map blended onto the image, as float RGB in [0, 1]."""
    heat = colormaps["jet"](cam)[..., :3]
    return (1 - alpha) * image.astype(np.float32) / 255 + alpha * heat


def tile(e: Explained, i: int) -> np.ndarray:
    """image | predicted-class overlay | true-class overlay, side by side, upscaled."""
    panels = [e.images[i] / 255, overlay(e.images[i], e.pred_maps[i]),
              overlay(e.images[i], e.true_maps[i])]
    gap = np.ones((32, 2, 3))
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    return np.kron(strip, np.ones((SCALE, SCALE, 1))).clip(0, 1)


def render_page(e: Explained, rows: range, classes: list[str], title: str,
                cols: int = 4, run_id: str | None = None) -> bytes:
    """One gallery page as PNG bytes: a grid of tiles, each captioned true -> predicted."""
    n_rows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(cols * 3.3, n_rows * 1.55 + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, rows):
        ax.imshow(tile(e, i), interpolation="nearest")
        flags = "".join([" ∅pred" if e.pred_empty[i] else "", " ∅true" if e.true_empty[i] else ""])
        ax.set_title(f"#{e.index[i]} {classes[e.true[i]]} → {classes[e.predicted[i]]}\n"
                     f"p(pred)={e.p_pred[i]:.2f} p(true)={e.p_true[i]:.2f}{flags}", fontsize=8)
    fig.suptitle(f"{title}\ntile: image | Grad-CAM of the predicted class | of the true class"
                 "   (∅: that map was flat after the ReLU, shown as zeros)", fontsize=10)
    return png_bytes(fig, run_id, dpi=90)


def write_gallery(e: Explained, classes: list[str], out_dir: Path, page_size: int,
                  progress: bool = True, run_id: str | None = None) -> list[Path]:
    """Every error across pages in `out_dir` (replaced whole, never half-written)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pages = math.ceil(len(e.index) / page_size)
    starts = range(0, len(e.index), page_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, total=pages, desc="gallery", unit="page")
    for p, start in enumerate(starts, 1):
        rows = range(start, min(start + page_size, len(e.index)))
        title = f"Test errors {start + 1}-{rows[-1] + 1} of {len(e.index)}, most confident first"
        (tmp / f"page-{p:03d}.png").write_bytes(render_page(e, rows, classes, title,
                                                            run_id=run_id))
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(out_dir.glob("page-*.png"))


def write_manifest(e: Explained, classes: list[str], path: Path, page_size: int,
                   run_id: str = "") -> None:
    """One CSV row per error: where its tile is, and both probabilities and empty-map flags."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "index", "true", "predicted", "true_name", "predicted_name", "p_pred", "p_true",
                "pred_map_empty", "true_map_empty", "page", "tile"])
    for i in range(len(e.index)):
        w.writerow([run_id, e.index[i], e.true[i], e.predicted[i], classes[e.true[i]],
                    classes[e.predicted[i]], f"{e.p_pred[i]:.6f}", f"{e.p_true[i]:.6f}",
                    int(e.pred_empty[i]), int(e.true_empty[i]), i // page_size + 1,
                    i % page_size + 1])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def write_report(run_dir: Path, pages: list[Path], summary: str, run_id: str = "") -> None:
    """report.html: the summary line, the figures and every gallery page, for a browser."""
    imgs = "".join(f'<h3>{p.stem}</h3><img src="{p.relative_to(run_dir)}">' for p in pages)
    doc = (f"<!doctype html><meta charset=utf-8><title>Test errors</title>"
           f'<meta name="run-id" content="{html.escape(run_id)}">'
           f"<style>body{{font-family:sans-serif}} img{{max-width:100%}}</style>"
           f"<h1>Test errors</h1><p>{html.escape(summary)}</p>"
           f'<img src="summary.png"><img src="curves.png"><img src="overview.png">'
           f'<p><a href="manifest.csv">manifest.csv</a></p>{imgs}')
    atomic_write_bytes(Path(run_dir) / "report.html", doc.encode())


def confusion_from_errors(e: Explained, class_counts: list[int]) -> np.ndarray:
    """The full confusion matrix from the errors and the number of test images per class."""
    k = len(class_counts)
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (e.true, e.predicted), 1)
    m[np.diag_indices(k)] = np.asarray(class_counts) - m.sum(1)
    return m

