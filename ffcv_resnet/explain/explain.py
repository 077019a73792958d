"""Explaining a run: check it against the test beton, Grad-CAM every error (one forward per batch),
then render the gallery and the report, and take the report's screenshot."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import option, require_range
from ..data.augment import to_float
from ..data.betons import beton_path, checked_metadata
from ..data.loaders import load_all
from ..data.options import DataConfig
from ..device import check_device, device_option, resolve_device
from ..errors import UserError, say
from ..model import eval_mode
from ..png import png_run_id
from ..precision import AUTO_PRECISION, autocast, resolve_precision
from ..records import Errors, Metrics, TestError, TestSet, read_json, write_json
from ..run_folder import (CHECKPOINT, CURVES, ERRORS, EXPLAIN_JSON, HISTORY, MANIFEST, METRICS,
                          OVERVIEW, REPORT, SCREENSHOT, SUMMARY, RunFolder, read_config,
                          read_history)
from ..timing import Stopwatch
from ..training.checkpoint import load_model
from ..training.evaluate import tta_logits
from .browser import screenshot_report, screenshot_skipped
from .gallery import Explained, confusion_from_errors
from .gradcam import check_layer, grad_cams
from .render import overview_images, render_outputs
from .report import ReportContext


@dataclass(frozen=True)
class ExplainConfig:
    """Explain: Grad-CAM of every test error"""
    layer: str = option("layer3", "module whose activations Grad-CAM weighs (layer3 is 8x8)")
    batch_size: int = option(1024, "images per Grad-CAM forward (both classes' backwards share it)")
    page_size: int = option(24, "errors per gallery page")
    precision: str = option("auto", AUTO_PRECISION, ("auto", "bf16", "fp32"))
    device: str = device_option()
    overview: bool = option(True, "also draw 10 random training images per class")
    screenshot: str = option("auto", "report.png, the report at desktop width in headless "
                             "Chromium: auto (if chromium and playwright are installed), on (an "
                             "error if not), off", ("auto", "on", "off"))

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "batch_size", 1)
        require_range(prefix, self, "page_size", 1)
        check_device(prefix, self.device)


@dataclass(frozen=True)
class ExplainRunConfig:
    """Run: the finished run to explain"""
    dir: str = option("runs/main", "run folder of a complete training run")


@dataclass(frozen=True)
class ExplainSettings:
    """scripts/explain.py's options."""
    data: DataConfig
    explain: ExplainConfig
    run: ExplainRunConfig


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
    model, blob = load_model(path / CHECKPOINT, device)
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
    if blob.get("test") != errors.test.__dict__:
        raise UserError(f"{path}: {ERRORS} and {CHECKPOINT} disagree on the test set")
    return FinishedRun(metrics.run_id, model, blob["classes"], errors.test, errors.errors,
                       metrics, history, read_config(path))


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


def cams_and_probs(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str,
                   precision: str, tta: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The maps of `classes` (K, N) of a float batch from one forward, and the probabilities
    `predict` gives with `tta`: that forward's logits are the plain view, and only the other
    test-time views run again, without a graph. Returns maps (K, N, H, W), empty (K, N),
    probs (N, classes)."""
    cams = grad_cams(model, x, classes, layer, precision=precision)
    with eval_mode(model), torch.no_grad(), autocast(x.device, precision):
        logits = tta_logits(model, x, tta, plain=cams.logits)
    return cams.maps, cams.empty, logits.softmax(1)


def explain(model: nn.Module, images: torch.Tensor, errors: list[TestError], layer: str,
            batch_size: int, precision: str = "fp32", tta: str = "flip") -> Explained:
    """Grad-CAM of the predicted and the true class of every error, and both probabilities,
    from one forward per batch (`cams_and_probs`); sorted most confident first."""
    if not errors:
        return Explained.none()
    classes = torch.tensor([[e.predicted for e in errors], [e.true for e in errors]],
                           device=images.device)  # (2, N): predicted, true
    x = to_float(images)
    parts = [cams_and_probs(model, x[s:s + batch_size], classes[:, s:s + batch_size], layer,
                            precision, tta) for s in range(0, len(errors), batch_size)]
    maps, empty, probs = zip(*parts)
    maps, empty = torch.cat(maps, 1).cpu().numpy(), torch.cat(empty, 1).cpu().numpy()
    p_pred, p_true = torch.cat(probs).gather(1, classes.T).T.cpu().numpy()
    pred, true = classes.cpu().numpy()
    order = np.argsort(-p_pred, kind="stable")
    return Explained(index=np.array([e.index for e in errors], dtype=np.int64)[order],
                     true=true[order], predicted=pred[order],
                     p_pred=p_pred[order], p_true=p_true[order],
                     images=images.permute(0, 2, 3, 1).cpu().numpy()[order],
                     pred_maps=maps[0][order], true_maps=maps[1][order],
                     pred_empty=empty[0][order], true_empty=empty[1][order])


def report_context(run: FinishedRun, e: Explained, ex: ExplainConfig, precision: str,
                   device: torch.device, cam_seconds: float) -> ReportContext:
    """What the report shows about the run and about this explain pass."""
    return ReportContext(
        run.run_id, run.classes, confusion_from_errors(e, run.test.class_counts),
        run.metrics.to_dict(), run.history, run.config,
        {"layer": ex.layer, "precision": precision, "device": str(device),
         "gradcam_seconds": cam_seconds}, ex.page_size,
        [MANIFEST, CURVES, SUMMARY] + ([OVERVIEW] if ex.overview else []) +
        [ERRORS, METRICS, EXPLAIN_JSON])


def write_explanations(run: FinishedRun, images: torch.Tensor, ex: ExplainConfig, precision: str,
                       device: torch.device, run_dir: Path, data_dir: Path,
                       train_count: int) -> None:
    """Grad-CAM every error, then gallery, manifest, figures, report, screenshot, explain.json."""
    model, errors, classes, rid = run.model, run.errors, run.classes, run.run_id
    no_screenshot = screenshot_skipped(ex.screenshot)  # 'on' without a browser fails here
    explain(model, images[:2], errors[:2], ex.layer, 2, precision, run.test.tta)  # warm-up
    with Stopwatch(device) as cam_time:
        e = explain(model, images, errors, ex.layer, ex.batch_size, precision, run.test.tta)
    say(f"Grad-CAM ({ex.layer}, {precision}, {device}): {len(errors)} errors x 2 classes in "
        f"{cam_time.seconds:.3f} s ({2 * len(errors) / max(cam_time.seconds, 1e-9):.0f} maps/s)")
    with Stopwatch(device) as render_time:
        ctx = report_context(run, e, ex, precision, device, cam_time.seconds)
        overview = overview_images(data_dir, classes, train_count) if ex.overview else None
        pages = render_outputs(e, ctx, run_dir, overview)
    say(f"rendering: {len(pages)} page(s), sprites, manifest, figures and report in "
        f"{render_time.seconds:.1f} s -> {run_dir / REPORT}")
    say(screenshot_report(run_dir / REPORT, run_dir / SCREENSHOT, rid, ex.screenshot,
                          no_screenshot))
    write_json(run_dir / EXPLAIN_JSON, {
        "run_id": rid, "errors": len(errors), **ctx.explain,
        "render_seconds": render_time.seconds, "pages": len(pages),
        "empty_pred_maps": int(e.pred_empty.sum()), "empty_true_maps": int(e.true_empty.sum()),
        "screenshot": (run_dir / SCREENSHOT).is_file(), "torch": torch.__version__})


def explain_run(cfg: ExplainSettings) -> None:
    """Check the run folder, the run and its data, then explain every error into the folder."""
    ex, run_dir, data_dir = cfg.explain, Path(cfg.run.dir), Path(cfg.data.dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    device = resolve_device(ex.device)
    precision = resolve_precision(ex.precision, device)
    with RunFolder(run_dir) as folder:
        run = load_finished_run(folder, device)
        check_layer(run.model, ex.layer)
        train_count = check_data_matches(run.test, data_dir)["counts"]["train"]
        images = load_error_images(data_dir, run.errors, device)
        write_explanations(run, images, ex, precision, device, run_dir, data_dir, train_count)
