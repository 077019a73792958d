"""The explain pass over a finished run's errors: every CAM method's maps of the predicted and
the true class, both probabilities with the run's test-time augmentation, and the faithfulness
scores of the maps, as one Explained record sorted from the most confident mistake, the maps'
and the scores' seconds timed apart. scripts/explain.py and the tests run this same function;
what is drawn from it is the command's (explain.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.augment import to_float
from ..finished.evaluate import tta_logits
from ..model import eval_mode
from ..precision import autocast
from ..records import TestError
from ..timing import Stopwatch
from .cams import CamSettings, cams
from .faithfulness import ScoreSettings, faithfulness
from .options import DEFAULT_METHODS, DEFAULT_METRICS
from .gallery import Explained


@dataclass(frozen=True)
class PassConfig:
    """What the pass computes and how."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    metrics: tuple[str, ...] = DEFAULT_METRICS
    layer: str = "layer3"
    batch_size: int = 1024  # images per forward; the scores' perturbed images too
    precision: str = "fp32"
    tta: str = "flip"  # the run's test-time augmentation, for the probabilities
    noise: float = 0.01  # ROAD's imputation noise
    steps: int = 16  # of the deletion and insertion curves
    seed: int = 0  # of ROAD's noise and of the scored sample


@dataclass
class MapPass:
    """What one batched pass over the errors computed, on the device, in `errors` order."""
    maps: torch.Tensor  # (M, 2, N, H, W): method, (predicted, true) class
    empty: torch.Tensor  # (M, 2, N) bool
    probs: torch.Tensor  # (2, N): p(predicted), p(true) with the run's test-time augmentation
    plain: torch.Tensor  # (2, N): the same without it (what the scores perturb)


@dataclass
class PassResult:
    """The pass: its record and what it cost."""
    explained: Explained
    scored: int  # errors whose maps were scored
    cams_seconds: float
    scores_seconds: float
    finite: bool  # every probability and map is a number (a damaged model's are not)


def map_pass(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
             cfg: PassConfig) -> MapPass:
    """Every method's maps of `classes` (2, N) of the float images `x`, from one forward and
    one backward per class set and batch; that forward's logits are the plain view of the
    test-time augmentation, whose other views run again without a graph."""
    parts = []
    for s in range(0, len(x), cfg.batch_size):
        xb, cb = x[s:s + cfg.batch_size], classes[:, s:s + cfg.batch_size]
        out = cams(model, xb, cb, CamSettings(cfg.methods, cfg.layer, precision=cfg.precision))
        plain = out[cfg.methods[0]].logits
        with eval_mode(model), torch.no_grad(), autocast(x.device, cfg.precision):
            logits = tta_logits(model, xb, cfg.tta, plain=plain)
        parts.append((torch.stack([out[m].maps for m in cfg.methods]),
                      torch.stack([out[m].empty for m in cfg.methods]),
                      logits.softmax(1).gather(1, cb.T).T, plain.softmax(1).gather(1, cb.T).T))
    maps, empty, probs, plain = (torch.cat(t, dim) for t, dim in zip(zip(*parts), (2, 2, 1, 1)))
    return MapPass(maps, empty, probs, plain)


def scored_indices(n: int, count: int, seed: int) -> np.ndarray:
    """Which of n errors are scored: all, or a seeded random sample of `count`, sorted."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def score_pass(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, p: MapPass,
               which: np.ndarray, cfg: PassConfig) -> dict[str, torch.Tensor]:
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
    generator = torch.Generator(device=x.device).manual_seed(cfg.seed)
    out = {}
    for metric in cfg.metrics:
        full = torch.full((m, 2, n), math.nan, device=x.device)
        if k:
            settings = ScoreSettings(metric, noise=cfg.noise, steps=cfg.steps,
                                     batch_size=cfg.batch_size, precision=cfg.precision,
                                     generator=generator)
            s = faithfulness(model, images, maps, cls, settings, before).view(m, 2, k)
            full[:, :, idx] = s.masked_fill(p.empty[:, :, idx], math.nan)
        out[metric] = full
    return out


def explained(images: torch.Tensor, errors: list[TestError], methods: tuple[str, ...],
              p: MapPass, scores: dict[str, torch.Tensor]) -> Explained:
    """The pass as numpy arrays, sorted from the most confident mistake."""
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


def explain_errors(model: nn.Module, images: torch.Tensor, errors: list[TestError],
                   cfg: PassConfig, scored: int | None = None,
                   warm_up: bool = False) -> PassResult:
    """Maps, probabilities and scores of every error (`scored` of them get scores, a seeded
    sample; all by default), from the uint8 `images` in `errors` order. `warm_up`: a first call
    on two errors (allocations, kernel choices) is run and not timed."""
    if not errors:
        return PassResult(Explained.none(cfg.methods, cfg.metrics), 0, 0.0, 0.0, True)
    device = images.device
    classes = torch.tensor([[e.predicted for e in errors], [e.true for e in errors]],
                           device=device, dtype=torch.long)  # (2, N): predicted, true
    x = to_float(images)
    which = scored_indices(len(errors), len(errors) if scored is None else scored, cfg.seed)
    if warm_up:
        warm = map_pass(model, x[:2], classes[:, :2], cfg)
        score_pass(model, x[:2], classes[:, :2], warm, np.arange(min(2, len(errors))),
                   PassConfig(**{**cfg.__dict__, "steps": 1}))
    with Stopwatch(device) as cam_time:
        p = map_pass(model, x, classes, cfg)
    finite = bool(torch.isfinite(p.probs).all() and torch.isfinite(p.maps).all())
    with Stopwatch(device) as score_time:
        scores = score_pass(model, x, classes, p, which, cfg) if finite else {}
    return PassResult(explained(images, errors, cfg.methods, p, scores), int(len(which)),
                      cam_time.seconds, score_time.seconds, finite)
