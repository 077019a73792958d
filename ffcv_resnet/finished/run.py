"""A complete run and its data, checked before anything is explained: every file of one run id,
the test beton the run was evaluated on, and the misclassified images loaded from it. A problem is
one UserError line; nothing has been drawn by then."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.betons import beton_path, checked_metadata
from ..data.loaders import content_of, load_all
from ..errors import UserError
from ..png import png_run_id
from ..records import Errors, Metrics, TestError, TestSet, read_json
from ..run_folder import (CHECKPOINT, CURVES, ERRORS, HISTORY, METRICS, RunFolder, read_config,
                          read_history)
from .checkpoint import load_checkpoint


@dataclass
class FinishedRun:
    """A complete run whose files all carry one run id: what explain works from."""
    run_id: str
    model: nn.Module  # eager, eval mode, on the device
    classes: list[str]
    test: TestSet
    errors: list[TestError]
    metrics: Metrics
    history: list[dict]
    config: dict  # config.yaml without the run id


def load_finished_run(folder: RunFolder, device: torch.device) -> FinishedRun:
    """Check that `folder` holds one complete run (same id in every file); UserError if not."""
    path = folder.path
    if not folder.complete():
        raise UserError(f"{path}: {folder.describe()}: no {METRICS}, so training did not finish "
                        "(--run.resume true continues it)")
    metrics = Metrics.from_dict(read_json(path / METRICS, "metrics"), str(path / METRICS))
    model, blob = load_checkpoint(path / CHECKPOINT, device)
    errors = Errors.from_dict(read_json(path / ERRORS, "errors file"), str(path / ERRORS))
    ids = {"config.yaml": folder.run_id(), METRICS: metrics.run_id, CHECKPOINT: blob.get("run_id"),
           ERRORS: errors.run_id, CURVES: png_run_id(path / CURVES)}
    history = read_history(path / HISTORY)
    for name, what, have, said in ((HISTORY, "epochs", len(history), metrics.epochs),
                                   (ERRORS, "errors", len(errors.errors), metrics.errors)):
        if have != said:
            raise UserError(f"{path}: {name} holds {have} {what}, {METRICS} says {said}: an "
                            "incomplete or edited set of files")
    ids.update({f"{HISTORY} line {i}": r.get("run_id") for i, r in enumerate(history, 1)})
    for name, run_id in ids.items():
        if run_id != metrics.run_id:
            raise UserError(f"{path}: files of different runs ({METRICS} is run "
                            f"{metrics.run_id}, {name} is {run_id or 'of no run'})")
    if TestSet.from_dict(blob.get("test"), str(path / CHECKPOINT)) != errors.test:
        raise UserError(f"{path}: {ERRORS} and {CHECKPOINT} disagree on the test set")
    return FinishedRun(metrics.run_id, model, blob["classes"], errors.test, errors.errors,
                       metrics, history, read_config(path))


def check_data_matches(run_test: TestSet, data_dir: Path) -> dict:
    """The betons' metadata, if the test beton in `data_dir` is the run's; else a UserError."""
    meta = checked_metadata(data_dir)
    counts = meta["counts"]
    if run_test.content:  # the run names its test images by content: wherever they came from
        if content_of(data_dir, meta, "test") != run_test.content:
            raise UserError(f"{data_dir}: test beton does not match the run (other images or "
                            f"labels, from {meta['source']['path']})")
    elif meta["source"]["fingerprint"] != run_test.fingerprint:
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
