"""Explaining a run: every CAM method's maps of the predicted and the true class of every error,
with the probabilities, from one forward and one backward per class set and batch; the
faithfulness scores of those maps; then the gallery, the report, its screenshot and explain.json.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, option, require_range
from ..data.augment import to_float
from ..data.options import DataDir
from ..device import check_device, device_option, resolve_device
from ..errors import UserError, say
from ..model import eval_mode
from ..precision import AUTO_PRECISION, autocast, resolve_precision
from ..records import Errors, TestError, write_json
from ..run_folder import (CHECKPOINT, CURVES, ERRORS, EXPLAIN_JSON, MANIFEST, METRICS, OVERVIEW, REPORT,
                          SCREENSHOT, SUMMARY, FinishedRunConfig, RunFolder)
from ..timing import Stopwatch
from ..finished.evaluate import tta_logits
from .activations import check_layer
from .browser import screenshot_report, screenshot_skipped
from .cams import DEFAULT_METHODS, METHODS, cams
from .faithfulness import DEFAULT_METRICS, METRICS as SCORES, faithfulness
from ..finished.run import (FinishedRun, check_data_matches, load_error_images,
                            load_finished_run)
from .gallery import WHICH, Explained, confusion_from_errors
from .render import clear_outputs, overview_images, render_outputs
from .report import ReportContext
from .scores import summarise

CPU_SCORED = 32  # errors scored by default on the CPU: every score of one error costs ~2.4 s


def _names(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


@dataclass(frozen=True)
class ExplainConfig:
    """Explain: every CAM method and faithfulness score of every test error"""
    layer: str = option("layer3", "module whose activations the CAM methods weigh (layer3 is 8x8)")
    batch_size: int = option(1024, "images per forward (the maps' backwards share it; the "
                             "scores' perturbed images go in batches of this size too)")
    page_size: int = option(24, "errors per gallery page")
    precision: str = option("auto", AUTO_PRECISION, ("auto", "bf16", "fp32"))
    device: str = device_option()
    methods: str = option(",".join(DEFAULT_METHODS), "CAM methods, comma-separated, the first "
                          f"drawn on the gallery's pages: any of {', '.join(METHODS)} (scorecam "
                          "runs one forward per channel of the layer per image: off by default)")
    metrics: str = option(",".join(DEFAULT_METRICS), "faithfulness scores of every map, comma-"
                          f"separated ('' for none): any of {', '.join(SCORES)}")
    scored: str = option("auto", "errors whose maps are scored: all; a number (a seeded random "
                         f"sample); auto: all on CUDA, {CPU_SCORED} on the CPU (where all six "
                         "methods' scores of one error take ~2.4 s)")
    noise: float = option(0.01, "ROAD's imputation noise (standard deviation; images in [0, 1])")
    steps: int = option(16, "steps of the deletion and insertion curves")
    seed: int = option(0, "seed of ROAD's noise and of the scored sample")
    overview: bool = option(True, "also draw 10 random training images per class")
    screenshot: str = option("auto", "report.png, the report at desktop width in headless "
                             "Chromium: auto (if chromium and playwright are installed), on (an "
                             "error if not), off", ("auto", "on", "off"))

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "batch_size", 1)
        require_range(prefix, self, "page_size", 1)
        require_range(prefix, self, "noise", 0, 1)
        require_range(prefix, self, "steps", 1, 1024)
        require_range(prefix, self, "seed", 0, 2**31 - 1)
        check_device(prefix, self.device)
        for name, known, allow_none in (("methods", METHODS, False), ("metrics", SCORES, True)):
            chosen = _names(getattr(self, name))
            bad = [x for x in chosen if x not in known]
            if bad or (not chosen and not allow_none) or len(set(chosen)) != len(chosen):
                what = bad[0] if bad else (getattr(self, name) or "(none)")
                raise ConfigError(f"bad value {what!r} for --{prefix}.{name} (expected a comma-"
                                  f"separated list of {', '.join(known)}, each once)")
        if self.scored not in ("auto", "all") and not (self.scored.isdigit()
                                                       and int(self.scored) >= 1):
            raise ConfigError(f"bad value {self.scored!r} for --{prefix}.scored (expected auto, "
                              "all or a number >= 1)")

    @property
    def method_names(self) -> tuple[str, ...]:
        return _names(self.methods)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return _names(self.metrics)

    def scored_count(self, errors: int, device: torch.device) -> int:
        """How many of `errors` get scores on `device`."""
        if self.scored == "all" or (self.scored == "auto" and device.type == "cuda"):
            return errors
        return min(errors, CPU_SCORED if self.scored == "auto" else int(self.scored))


@dataclass(frozen=True)
class ExplainSettings:
    """scripts/explain.py's options."""
    data: DataDir
    explain: ExplainConfig
    run: FinishedRunConfig


@dataclass
class MapPass:
    """What one batched pass over the errors computed, on the device, in `errors` order."""
    maps: torch.Tensor  # (M, 2, N, H, W): method, (predicted, true) class
    empty: torch.Tensor  # (M, 2, N) bool
    probs: torch.Tensor  # (2, N): p(predicted), p(true) with the run's test-time augmentation
    plain: torch.Tensor  # (2, N): the same without it (what the scores perturb)


def map_pass(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, methods: tuple[str, ...],
             layer: str, batch_size: int, precision: str, tta: str) -> MapPass:
    """Every method's maps of `classes` (2, N) of the float images `x`, from one forward and
    one backward per class set and batch; that forward's logits are the plain view of the
    test-time augmentation, whose other views run again without a graph."""
    parts = []
    for s in range(0, len(x), batch_size):
        xb, cb = x[s:s + batch_size], classes[:, s:s + batch_size]
        out = cams(model, xb, cb, methods, layer, precision=precision)
        plain = out[methods[0]].logits
        with eval_mode(model), torch.no_grad(), autocast(x.device, precision):
            logits = tta_logits(model, xb, tta, plain=plain)
        parts.append((torch.stack([out[m].maps for m in methods]),
                      torch.stack([out[m].empty for m in methods]),
                      logits.softmax(1).gather(1, cb.T).T, plain.softmax(1).gather(1, cb.T).T))
    maps, empty, probs, plain = (torch.cat(t, dim) for t, dim in zip(zip(*parts), (2, 2, 1, 1)))
    return MapPass(maps, empty, probs, plain)


def scored_indices(n: int, count: int, seed: int) -> np.ndarray:
    """Which of n errors are scored: all, or a seeded random sample of `count`, sorted."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def score_pass(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, p: MapPass,
               metrics: tuple[str, ...], which: np.ndarray, ex: ExplainConfig,
               precision: str) -> dict[str, torch.Tensor]:
    """Every metric's score of every map of the errors `which`: {metric: (M, 2, N)}, NaN for
    the others and for flat maps (a flat map ranks no pixel above another). All maps of all
    methods go through one batched call per metric."""
    m, _, n = p.empty.shape
    idx = torch.as_tensor(which, device=x.device, dtype=torch.long)
    k = len(idx)
    images = x[idx].repeat(2 * m, 1, 1, 1)  # (M * 2 * k, 3, H, W): method, class, error
    maps = p.maps[:, :, idx].reshape(-1, *x.shape[-2:])
    cls = classes[:, idx].repeat(m, 1).reshape(-1)
    before = p.plain[:, idx].repeat(m, 1).reshape(-1)
    generator = torch.Generator(device=x.device).manual_seed(ex.seed)
    out = {}
    for metric in metrics:
        full = torch.full((m, 2, n), math.nan, device=x.device)
        if k:
            s = faithfulness(model, images, maps, cls, metric, noise=ex.noise,
                             generator=generator, steps=ex.steps, batch_size=ex.batch_size,
                             precision=precision, before=before).view(m, 2, k)
            full[:, :, idx] = s.masked_fill(p.empty[:, :, idx], math.nan)
        out[metric] = full
    return out


def explained(images: torch.Tensor, errors: list[TestError], methods: tuple[str, ...],
              p: MapPass, scores: dict[str, torch.Tensor]) -> Explained:
    """The pass as numpy arrays, sorted from the most confident mistake."""
    if not errors:
        return Explained.none(methods, tuple(scores))
    p_pred, p_true = p.probs.cpu().numpy()
    order = np.argsort(-p_pred, kind="stable")
    return Explained(
        index=np.array([e.index for e in errors], dtype=np.int64)[order],
        true=np.array([e.true for e in errors], dtype=np.int64)[order],
        predicted=np.array([e.predicted for e in errors], dtype=np.int64)[order],
        p_pred=p_pred[order], p_true=p_true[order],
        images=images.permute(0, 2, 3, 1).cpu().numpy()[order], methods=methods,
        maps=p.maps.cpu().numpy()[:, :, order], empty=p.empty.cpu().numpy()[:, :, order],
        scores={k: v.cpu().numpy()[:, :, order] for k, v in scores.items()})


def explain(model: nn.Module, images: torch.Tensor, errors: list[TestError], ex: ExplainConfig,
            precision: str = "fp32", tta: str = "flip",
            which: np.ndarray | None = None) -> Explained:
    """Maps, probabilities and scores of every error (`which`: the ones scored, all by
    default); the three steps below in one call."""
    methods, metrics = ex.method_names, ex.metric_names
    if not errors:
        return Explained.none(methods, metrics)
    classes = torch.tensor([[e.predicted for e in errors], [e.true for e in errors]],
                           device=images.device)  # (2, N): predicted, true
    x = to_float(images)
    p = map_pass(model, x, classes, methods, ex.layer, ex.batch_size, precision, tta)
    which = np.arange(len(errors)) if which is None else which
    return explained(images, errors, methods, p,
                     score_pass(model, x, classes, p, metrics, which, ex, precision))


def errors_with_scores(run: FinishedRun, e: Explained) -> Errors:
    """errors.json's rows with each scored error's scores: {method: {metric: {pred, true}}}."""
    row = {int(i): k for k, i in enumerate(e.index)}

    def value(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    def scores(k: int) -> dict | None:
        if not e.scores or all(np.isnan(v[:, :, k]).all() for v in e.scores.values()):
            return None
        return {method: {metric: {w: value(v[m, j, k]) for j, w in enumerate(WHICH)}
                         for metric, v in e.scores.items()} for m, method in enumerate(e.methods)}

    rows = [replace(r, scores=scores(row[r.index])) for r in run.errors]
    return Errors(run.run_id, run.classes, run.test, rows)


def report_context(run: FinishedRun, e: Explained, settings: dict) -> ReportContext:
    """What the report shows about the run and about this explain pass."""
    return ReportContext(
        run.run_id, run.classes, confusion_from_errors(e, run.test.class_counts),
        run.metrics.to_dict(), run.history, run.config, settings, settings["page_size"],
        [MANIFEST, CURVES, SUMMARY] + ([OVERVIEW] if settings["overview"] else []) +
        [ERRORS, METRICS, EXPLAIN_JSON])


def write_explanations(run: FinishedRun, images: torch.Tensor, ex: ExplainConfig, precision: str,
                       device: torch.device, run_dir: Path, data_dir: Path,
                       train_count: int) -> None:
    """Maps and scores of every error, then gallery, manifest, figures, report, screenshot,
    the scores in errors.json, and explain.json last."""
    model, errors = run.model, run.errors
    methods, metrics = ex.method_names, ex.metric_names
    no_screenshot = screenshot_skipped(ex.screenshot)  # 'on' without a browser fails here
    classes = torch.tensor([[r.predicted for r in errors], [r.true for r in errors]],
                           device=device, dtype=torch.long).view(2, -1)
    x = to_float(images)
    which = scored_indices(len(errors), ex.scored_count(len(errors), device), ex.seed)
    if errors:  # warm-up: the first calls allocate and pick kernels
        warm = map_pass(model, x[:2], classes[:, :2], methods, ex.layer, 2, precision,
                        run.test.tta)
        score_pass(model, x[:2], classes[:, :2], warm, metrics, np.arange(min(2, len(errors))),
                   replace(ex, steps=1), precision)
    with Stopwatch(device) as cam_time:
        p = map_pass(model, x, classes, methods, ex.layer, ex.batch_size, precision,
                     run.test.tta) if errors else None
    if p is not None and not (torch.isfinite(p.probs).all() and torch.isfinite(p.maps).all()):
        raise UserError(f"{run_dir / CHECKPOINT}: the model gives NaN or inf probabilities or "
                        "maps; nothing was drawn")
    maps = 2 * len(errors) * len(methods)
    say(f"maps ({', '.join(methods)}; {ex.layer}, {precision}, {device}): {len(errors)} errors x "
        f"2 classes x {len(methods)} methods in {cam_time.seconds:.3f} s "
        f"({maps / max(cam_time.seconds, 1e-9):.0f} maps/s)")
    with Stopwatch(device) as score_time:
        scores = score_pass(model, x, classes, p, metrics, which, ex, precision) if errors \
            else {}
    if metrics:
        say(f"scores ({', '.join(metrics)}): {len(which)} of {len(errors)} errors, "
            f"{2 * len(which) * len(methods)} maps, in {score_time.seconds:.3f} s"
            + ("" if len(which) == len(errors) else " (a seeded sample: --explain.scored all "
               "scores every error)"))
    e = explained(images, errors, methods, p, scores) if errors else \
        Explained.none(methods, metrics)
    settings = {"layer": ex.layer, "precision": precision, "device": str(device),
                "methods": list(methods), "metrics": list(metrics), "errors": len(errors),
                "scored": int(len(which)), "noise": ex.noise, "steps": ex.steps,
                "seed": ex.seed, "page_size": ex.page_size, "overview": ex.overview,
                "cams_seconds": cam_time.seconds, "scores_seconds": score_time.seconds,
                "explain_seconds": cam_time.seconds + score_time.seconds,
                "faithfulness": summarise(e, run.classes)}
    try:  # one pass's outputs whole, or none: an interrupted or failed pass leaves nothing
        _write_outputs(run, e, ex, settings, run_dir, data_dir, train_count, no_screenshot,
                       device)
    except BaseException:
        clear_outputs(run_dir)
        if any(r.scores for r in run.errors):  # an earlier pass's scores go with its outputs
            write_json(run_dir / ERRORS, Errors(run.run_id, run.classes, run.test,
                                                [replace(r, scores=None) for r in run.errors])
                       .to_dict())
        raise


def _write_outputs(run: FinishedRun, e: Explained, ex: ExplainConfig, settings: dict,
                   run_dir: Path, data_dir: Path, train_count: int, no_screenshot: str | None,
                   device: torch.device) -> None:
    """Gallery, manifest, figures, report, screenshot, the scores in errors.json, then
    explain.json: the pass is finished."""
    rid, metrics = run.run_id, settings["metrics"]
    with Stopwatch(device) as render_time:
        ctx = report_context(run, e, settings)
        overview = overview_images(data_dir, run.classes, train_count) if ex.overview else None
        pages = render_outputs(e, ctx, run_dir, overview)
    say(f"rendering: {len(pages)} page(s), sprites, manifest, figures and report in "
        f"{render_time.seconds:.1f} s -> {run_dir / REPORT}")
    say(screenshot_report(run_dir / REPORT, run_dir / SCREENSHOT, rid, ex.screenshot,
                          no_screenshot))
    best = settings["faithfulness"].get("most_faithful")
    if best:
        say(f"most faithful method by {', '.join(metrics)}: {best}")
    write_json(run_dir / ERRORS, errors_with_scores(run, e).to_dict())
    write_json(run_dir / EXPLAIN_JSON, {
        "run_id": rid, **{k: v for k, v in settings.items() if k not in ("page_size",
                                                                        "overview")},
        "render_seconds": render_time.seconds, "pages": len(pages),
        "empty_pred_maps": int(e.pred_empty.sum()), "empty_true_maps": int(e.true_empty.sum()),
        "screenshot": (run_dir / SCREENSHOT).is_file(), "torch": torch.__version__})


def explain_run(cfg: ExplainSettings) -> None:
    """Check the run folder, the run and its data, then explain every error into the folder."""
    ex, run_dir, data_dir = cfg.explain, Path(cfg.run.dir), Path(cfg.data.dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    screenshot_skipped(ex.screenshot)  # 'on' without a browser: refused before any work
    device = resolve_device(ex.device)
    precision = resolve_precision(ex.precision, device)
    with RunFolder(run_dir) as folder:
        run = load_finished_run(folder, device)
        run.model.to(memory_format=torch.channels_last)  # the layout of the batches it gets
        check_layer(run.model, ex.layer)
        train_count = check_data_matches(run.test, data_dir)["counts"]["train"]
        images = load_error_images(data_dir, run.errors, device)
        write_explanations(run, images, ex, precision, device, run_dir, data_dir, train_count)
