"""Label issues among a finished run's test images, from the run itself, by cleanlab's confident
learning: the run's test probabilities are out of sample by construction (the model never
trained on them), which is what confident learning (Northcutt and others, 2021) asks of its
predicted probabilities, so `find_label_issues` over every test image flags the labels it finds
doubtful. cleanlab is an optional dependency here: where it is not installed (the GPU machine's
bare image) nothing is flagged and the run says why."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path


def label_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(bool mask over the images: cleanlab flags the label, or None; a line saying what was
    done). `probs`: (N, C) softmax probabilities, rows in `labels`' order."""
    try:
        from cleanlab.filter import find_label_issues
    except Exception as e:  # noqa: BLE001 (not installed, or broken: the run goes on)
        return None, f"label issues not looked for: cleanlab does not import here ({e})"
    present = np.bincount(labels, minlength=probs.shape[1]) > 0
    if not present.all():  # cleanlab needs every class among the labels
        return None, ("label issues not looked for: the test images lack a class "
                      f"({int((~present).sum())} of {probs.shape[1]})")
    # n_jobs=1: a pool would fork workers that inherit the run's SIGTERM handler (and its
    # traceback when the pool ends them); one process takes about a second over 10,000 images
    mask = np.asarray(find_label_issues(labels=labels, pred_probs=probs, n_jobs=1), dtype=bool)
    return mask, f"cleanlab flags {int(mask.sum())} of {len(labels)} test labels as doubtful"


def write_test_probs(path: Path, probs: np.ndarray, index: np.ndarray, labels: np.ndarray,
                     run_id: str) -> None:
    """test_probs.npz: every test image's probabilities with the run's test-time augmentation,
    its test index and label, written whole or not at all."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, run_id=np.array(run_id), probs=probs.astype(np.float32),
                     index=np.asarray(index, dtype=np.int64), label=np.asarray(labels))
