"""Explaining a run: check it against the test beton, Grad-CAM every error, assemble the gallery."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .augment import to_float
from .betons import beton_path, checked_metadata
from .checkpoint import load_model
from .errors import UserError
from .evaluate import predict
from .figures import png_run_id
from .gallery import Explained
from .gradcam import grad_cam
from .loaders import load_all
from .records import Errors, Metrics, TestError, TestSet, read_json
from .run import CHECKPOINT, CURVES, ERRORS, HISTORY, METRICS, RunFolder, read_history


@dataclass
class FinishedRun:
    """A complete run whose files all carry one run id: what explain works from."""
    run_id: str
    model: nn.Module  # eager, eval mode, on the device
    classes: list[str]
    test: TestSet
    errors: list[TestError]
    metrics: Metrics


def load_finished_run(folder: RunFolder, device: torch.device) -> FinishedRun:
    """Check that `folder` holds one complete run (same id in every file); UserError if not."""
    path = folder.path
    if not folder.complete():
        raise UserError(f"{path}: {folder.describe()}: no {METRICS}, so training did not finish "
                        "(--run.resume true continues it)")
    metrics = Metrics.from_dict(read_json(path / METRICS, "metrics"), str(path / METRICS))
    model, blob = load_model(path / CHECKPOINT, device)
    errors = Errors.from_dict(read_json(path / ERRORS, "errors file"), str(path / ERRORS))
    ids = {"config.yaml": folder.run_id(), METRICS: metrics.run_id, CHECKPOINT: blob.get("run_id"),
           ERRORS: errors.run_id, CURVES: png_run_id(path / CURVES)}
    ids.update({f"{HISTORY} line {i}": r.get("run_id")
                for i, r in enumerate(read_history(path / HISTORY), 1)})
    for name, run_id in ids.items():
        if run_id != metrics.run_id:
            raise UserError(f"{path}: files of different runs ({METRICS} is run "
                            f"{metrics.run_id}, {name} is {run_id or 'of no run'})")
    if blob.get("test") != errors.test.__dict__:
        raise UserError(f"{path}: {ERRORS} and {CHECKPOINT} disagree on the test set")
    return FinishedRun(metrics.run_id, model, blob["classes"], errors.test, errors.errors,
                       metrics)


def check_data_matches(run_test: TestSet, data_dir: Path) -> dict:
    """The betons' metadata, if the test beton in `data_dir` is the run's; else a UserError."""
    meta = checked_metadata(data_dir)
    counts = meta["counts"]
    if meta["source"]["fingerprint"] != run_test.fingerprint:
        raise UserError(f"{data_dir}: test beton does not match the run (made from another "
                        f"source: {meta['source']['path']})")
    subset = run_test.subset
    expected = len(subset) if subset else counts["test"]
    if expected != run_test.count or (subset and max(subset) >= counts["test"]):
        raise UserError(f"{data_dir}: test beton does not match the run ({counts['test']} "
                        f"images; the run was evaluated on {run_test.count})")
    return meta


def load_error_images(data_dir: Path, errors: list[TestError],
                      device: torch.device) -> torch.Tensor:
    """Only the misclassified test images (uint8, in `errors` order), labels checked."""
    idx = [e.index for e in errors]
    if not idx:  # a run without errors: nothing to load
        return torch.zeros(0, 3, 32, 32, dtype=torch.uint8, device=device)
    images, labels = load_all(beton_path(data_dir, "test"), device, indices=idx)
    if labels.tolist() != [e.true for e in errors]:
        raise UserError(f"{data_dir}: test beton does not match the run (labels differ)")
    return images


def explain(model: nn.Module, images: torch.Tensor, errors: list[TestError], layer: str,
            batch_size: int, precision: str = "fp32", tta: bool = True) -> Explained:
    """Grad-CAM for the predicted and the true class of every error, sorted most confident first.

    Both maps of a batch come from one forward and one backward over [images; images].
    """
    n = len(errors)
    if n == 0:
        none = np.zeros(0, dtype=np.int64)
        return Explained(none, none, none, np.zeros(0), np.zeros(0),
                         np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, 32, 32)),
                         np.zeros((0, 32, 32)), np.zeros(0, bool), np.zeros(0, bool))
    pred = torch.tensor([e.predicted for e in errors], device=images.device)
    true = torch.tensor([e.true for e in errors], device=images.device)
    x = to_float(images)
    half = max(batch_size // 2, 1)
    maps, empty = [], []
    for s in range(0, n, half):
        both = torch.cat([x[s:s + half], x[s:s + half]])
        res = grad_cam(model, both, torch.cat([pred[s:s + half], true[s:s + half]]), layer,
                       precision=precision)
        maps.append(res.maps.view(2, -1, *res.maps.shape[1:]))
        empty.append(res.empty.view(2, -1))
    probs = predict(model, images, batch_size=batch_size, precision=precision,
                    tta=tta).softmax(1)
    maps, empty = torch.cat(maps, 1).cpu().numpy(), torch.cat(empty, 1).cpu().numpy()
    p_pred = probs.gather(1, pred[:, None])[:, 0].cpu().numpy()
    p_true = probs.gather(1, true[:, None])[:, 0].cpu().numpy()
    order = np.argsort(-p_pred, kind="stable")
    return Explained(index=np.array([e.index for e in errors], dtype=np.int64)[order],
                     true=true.cpu().numpy()[order], predicted=pred.cpu().numpy()[order],
                     p_pred=p_pred[order], p_true=p_true[order],
                     images=images.permute(0, 2, 3, 1).cpu().numpy()[order],
                     pred_maps=maps[0][order], true_maps=maps[1][order],
                     pred_empty=empty[0][order], true_empty=empty[1][order])


def overview_images(data_dir: Path, classes: list[str], n: int, per_class: int = 10,
                    seed: int = 0):
    """Enough random training images (of `n`) to show `per_class` of each class: NHWC, labels."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, min(n, per_class * len(classes) * 6), replace=False))
    images, labels = load_all(beton_path(data_dir, "train"), torch.device("cpu"), indices=idx)
    if np.bincount(labels.numpy(), minlength=len(classes)).min() < per_class and len(idx) < n:
        images, labels = load_all(beton_path(data_dir, "train"), torch.device("cpu"))
    return images.permute(0, 2, 3, 1).numpy(), labels.numpy()
