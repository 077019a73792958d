"""Gallery of test errors: pages of (image | predicted-class map | true-class map) tiles of the
first method, sprite sheets of the same three panels for every method at full resolution for the
report, and a manifest with each error's probabilities, flat maps and faithfulness scores."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path, atomic_write_bytes
from ..png import array_png_bytes, png_bytes, plt
from ..pages import overlay

SCALE = 3  # pixels per CIFAR pixel in a page's tile
GAP = 2  # white CIFAR pixels between a tile's panels
CELL_W, CELL_H, CAPTION_H, TITLE_H = 310, 136, 30, 46  # a page's layout, in page pixels
PAGE_DPI = 90
SPRITE_ROWS = 128  # errors per sprite sheet: one row of three 32x32 panels each


WHICH = ("pred", "true")  # the two maps of an error: of the predicted and of the true class


@dataclass
class Explained:
    """Every error of a run with its maps, sorted from the most confident mistake."""
    index: np.ndarray  # (N,) dataset index in the test split
    true: np.ndarray  # (N,)
    predicted: np.ndarray  # (N,)
    p_pred: np.ndarray  # (N,)
    p_true: np.ndarray  # (N,)
    images: np.ndarray  # (N, 32, 32, 3) uint8
    methods: tuple[str, ...]  # the CAM methods, the first drawn on the gallery's pages
    maps: np.ndarray  # (M, 2, N, 32, 32) in [0, 1]: method, (predicted, true) class
    empty: np.ndarray  # (M, 2, N) bool: flat after the ReLU, drawn as zeros
    scores: dict[str, np.ndarray]  # faithfulness metric -> (M, 2, N), NaN: not scored

    @classmethod
    def none(cls, methods: tuple[str, ...] = ("gradcam",),
             metrics: tuple[str, ...] = ()) -> "Explained":
        """A run without errors."""
        i, p, m = np.zeros(0, np.int64), np.zeros(0), len(methods)
        return cls(i, i, i, p, p, np.zeros((0, 32, 32, 3), np.uint8), tuple(methods),
                   np.zeros((m, 2, 0, 32, 32)), np.zeros((m, 2, 0), bool),
                   {k: np.zeros((m, 2, 0)) for k in metrics})

    def flat_counts(self) -> dict[str, list[int]]:
        """Per method, how many maps of the predicted and of the true class were flat."""
        return {m: [int(self.empty[k, 0].sum()), int(self.empty[k, 1].sum())]
                for k, m in enumerate(self.methods)}


def panels(e: Explained, rows: slice, method: int = 0) -> np.ndarray:
    """(n, 3, 32, 32, 3) float RGB: image, predicted-class overlay, true-class overlay."""
    images = e.images[rows]
    return np.stack([images / 255, overlay(images, e.maps[method, 0, rows]),
                     overlay(images, e.maps[method, 1, rows])], axis=1).clip(0, 1)


def caption(e: Explained, i: int, classes: list[str]) -> str:
    """#index true → predicted, then both probabilities and which maps were flat."""
    flags = "".join([" ∅pred" if e.empty[0, 0, i] else "",  # the drawn (first) method's maps
                     " ∅true" if e.empty[0, 1, i] else ""])
    return (f"#{e.index[i]} {classes[e.true[i]]} → {classes[e.predicted[i]]}\n"
            f"p(pred)={e.p_pred[i]:.2f} p(true)={e.p_true[i]:.2f}{flags}")


def page_canvas(e: Explained, rows: range, cols: int) -> np.ndarray:
    """The page's pixels: white, with each tile (three panels, upscaled) below its caption."""
    n_rows = math.ceil(len(rows) / cols)
    canvas = np.ones((TITLE_H + n_rows * CELL_H, cols * CELL_W, 3), np.float32)
    strips = panels(e, slice(rows.start, rows.stop))  # (n, 3, 32, 32, 3)
    gap = np.ones((len(strips), 32, GAP, 3), np.float32)
    strips = np.concatenate([strips[:, 0], gap, strips[:, 1], gap, strips[:, 2]], axis=2)
    strips = strips.repeat(SCALE, axis=1).repeat(SCALE, axis=2)  # (n, 96, 300, 3)
    h, w = strips.shape[1:3]
    for k, strip in enumerate(strips):
        y, x = TITLE_H + (k // cols) * CELL_H + CAPTION_H, (k % cols) * CELL_W + (CELL_W - w) // 2
        canvas[y:y + h, x:x + w] = strip
    return canvas


def render_page(e: Explained, rows: range, classes: list[str], title: str,
                cols: int = 4, run_id: str | None = None) -> bytes:
    """One gallery page as PNG bytes: a grid of tiles, each captioned true -> predicted. The page
    is one image with text on it (one axes, not one per tile: several times faster to draw)."""
    canvas = page_canvas(e, rows, cols)
    fig = plt.figure(figsize=(canvas.shape[1] / PAGE_DPI, canvas.shape[0] / PAGE_DPI))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    for k, i in enumerate(rows):
        ax.text((k % cols + 0.5) * CELL_W, TITLE_H + (k // cols) * CELL_H + CAPTION_H - 2,
                caption(e, i, classes), ha="center", va="bottom", fontsize=8, linespacing=1.1)
    ax.text(canvas.shape[1] / 2, 4, f"{title}\ntile: image | Grad-CAM of the predicted class | "
            "of the true class   (∅: that map was flat after the ReLU, shown as zeros)",
            ha="center", va="top", fontsize=10)
    return png_bytes(fig, run_id, dpi=PAGE_DPI, tight=False)  # the canvas is the layout


def sprite_sheets(e: Explained, method: int = 0) -> list[np.ndarray]:
    """uint8 sheets of up to SPRITE_ROWS errors, one per row: image | pred overlay | true
    overlay, 32x32 each at full resolution (the report scales them up)."""
    sheets = []
    for start in range(0, len(e.index), SPRITE_ROWS):
        p = panels(e, slice(start, start + SPRITE_ROWS), method)  # (n, 3, 32, 32, 3)
        rows = p.transpose(0, 2, 1, 3, 4).reshape(len(p) * 32, 3 * 32, 3)
        sheets.append((rows * 255).round().astype(np.uint8))
    return sheets


def sprite_name(sheet: int, method: str = "gradcam") -> str:
    """The file name of a method's sprite sheet `sheet` (0-based) in the gallery folder."""
    return f"sprite-{method}-{sheet + 1:03d}.png"


def page_name(page: int) -> str:
    """The file name of gallery page `page` (0-based) in the gallery folder."""
    return f"page-{page + 1:03d}.png"


def write_gallery(e: Explained, classes: list[str], out_dir: Path, page_size: int,
                  progress: bool = True, run_id: str | None = None) -> list[Path]:
    """Every error across pages and sprite sheets in `out_dir` (replaced whole, never
    half-written); returns the pages."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for m, method in enumerate(e.methods):
            for k, sheet in enumerate(sprite_sheets(e, m)):
                (tmp / sprite_name(k, method)).write_bytes(array_png_bytes(sheet, run_id))
        starts = range(0, len(e.index), page_size)
        if progress:
            from tqdm import tqdm
            starts = tqdm(starts, desc="gallery", unit="page")
        for p, start in enumerate(starts):
            rows = range(start, min(start + page_size, len(e.index)))
            title = (f"Test errors {start + 1}-{rows[-1] + 1} of {len(e.index)}, most confident "
                     f"first; maps: {e.methods[0]}")
            (tmp / page_name(p)).write_bytes(render_page(e, rows, classes, title, run_id=run_id))
    return sorted(out_dir.glob("page-*.png"))


def score_columns(e: Explained) -> list[tuple[str, str, int, int]]:
    """(column name, metric, method index, pred 0 / true 1) of every score in the manifest."""
    return [(f"{method}_{metric}_{which}", metric, m, k) for metric in e.scores
            for m, method in enumerate(e.methods) for k, which in enumerate(WHICH)]


def write_manifest(e: Explained, classes: list[str], path: Path, page_size: int,
                   run_id: str = "") -> None:
    """One CSV row per error: where its tile is, both probabilities, the first method's
    empty-map flags, and every score (blank where an error or a flat map was not scored)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    columns = score_columns(e)
    w.writerow(["run_id", "index", "true", "predicted", "true_name", "predicted_name", "p_pred",
                "p_true", "pred_map_empty", "true_map_empty", "page", "tile",
                *(c[0] for c in columns)])
    for i in range(len(e.index)):
        scores = [e.scores[metric][m, k, i] for _, metric, m, k in columns]
        w.writerow([run_id, e.index[i], e.true[i], e.predicted[i], classes[e.true[i]],
                    classes[e.predicted[i]], f"{e.p_pred[i]:.6f}", f"{e.p_true[i]:.6f}",
                    int(e.empty[0, 0, i]), int(e.empty[0, 1, i]), i // page_size + 1,
                    i % page_size + 1, *("" if np.isnan(s) else f"{s:.6f}" for s in scores)])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def confusion_from_errors(e: Explained, class_counts: list[int]) -> np.ndarray:
    """The full confusion matrix from the errors and the number of test images per class."""
    k = len(class_counts)
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (e.true, e.predicted), 1)
    m[np.diag_indices(k)] = np.asarray(class_counts) - m.sum(1)
    return m
