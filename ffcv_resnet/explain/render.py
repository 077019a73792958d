"""What explain draws once Grad-CAM is done: the gallery's pages and sprite sheets, the manifest,
the summary figure, the overview (random training images from the train beton), and report.html
over all of them; drawn into a staging folder inside the run folder and swapped in for the
previous pass's outputs only when whole."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.betons import beton_path
from .figures import plot_overview, plot_summary
from ..io import remove
from ..run_folder import EXPLAIN_FILES, EXPLAIN_JSON, GALLERY, MANIFEST, OVERVIEW, SUMMARY
from .gallery import Explained, write_gallery, write_manifest
from ..data.loaders import load_all
from .report import ReportContext, write_report


def render_outputs(e: Explained, ctx: ReportContext, run_dir: Path,
                   overview: tuple[np.ndarray, np.ndarray] | None = None,
                   progress: bool = True) -> list[Path]:
    """Every rendered output (the overview when its training images are given); the pages.

    Every output of an earlier pass goes first, and whatever this pass drew goes too if it is
    interrupted or fails: the folder holds one pass's outputs whole, or none (explain.json,
    written last by explain, marks a finished pass)."""
    run_dir, rid = Path(run_dir), ctx.run_id
    clear_outputs(run_dir)
    try:
        pages = write_gallery(e, ctx.classes, run_dir / GALLERY, ctx.page_size, progress, rid)
        write_manifest(e, ctx.classes, run_dir / MANIFEST, ctx.page_size, rid)
        plot_summary(ctx.confusion, ctx.classes, run_dir / SUMMARY, rid)
        if overview is not None:
            plot_overview(*overview, ctx.classes, run_dir / OVERVIEW, run_id=rid)
        write_report(run_dir, e, ctx)
    except BaseException:
        clear_outputs(run_dir)
        raise
    return pages


# hidden temporaries of the run folder (the run folder counts them as its own): the new pass
# being drawn, and the previous pass's outputs while they are swapped out
STAGING, PREVIOUS = ".explain.tmp", ".explain.old"


def staging_folder(run_dir: Path, create: bool = True) -> Path:
    """A fresh, empty staging folder in `run_dir` (with `create`), or none left (without); a
    killed pass's leftovers go either way."""
    staging = Path(run_dir) / STAGING
    remove(staging)
    remove(Path(run_dir) / PREVIOUS)
    if create:
        staging.mkdir()
    return staging


def publish(staging: Path, run_dir: Path) -> None:
    """The pass drawn whole in `staging` in place of the previous pass's outputs, by renames:
    explain.json, which marks a finished pass, leaves first and arrives last; if a rename
    fails, the previous outputs are put back."""
    previous = run_dir / PREVIOUS
    remove(previous)
    previous.mkdir()
    order = [EXPLAIN_JSON, *(n for n in EXPLAIN_FILES if n != EXPLAIN_JSON)]
    out, arrived = [], []
    try:
        for name in order:
            if os.path.lexists(run_dir / name):
                os.replace(run_dir / name, previous / name)
                out.append(name)
        for name in [*order[1:], EXPLAIN_JSON]:
            if os.path.lexists(staging / name):
                os.replace(staging / name, run_dir / name)
                arrived.append(name)
    except BaseException:
        for name in arrived:
            remove(run_dir / name)
        for name in out:
            os.replace(previous / name, run_dir / name)
        raise
    finally:
        remove(previous)


def clear_outputs(run_dir: Path) -> None:
    """Remove every explain output from the run folder, and their temporaries."""
    run_dir = Path(run_dir)
    for name in EXPLAIN_FILES:
        remove(run_dir / name)
        for tmp in run_dir.glob(f".{name}.*"):
            remove(tmp)


def overview_images(data_dir: Path, classes: list[str], n: int, per_class: int = 10,
                    seed: int = 0):
    """Enough random training images (of `n`) to show `per_class` of each class: NHWC, labels."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, min(n, per_class * len(classes) * 6), replace=False))
    images, labels = load_all(beton_path(data_dir, "train"), torch.device("cpu"), indices=idx)
    if np.bincount(labels.numpy(), minlength=len(classes)).min() < per_class and len(idx) < n:
        images, labels = load_all(beton_path(data_dir, "train"), torch.device("cpu"))
    return images.permute(0, 2, 3, 1).numpy(), labels.numpy()
