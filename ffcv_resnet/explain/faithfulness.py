"""Faithfulness of explanation maps: does a map point at what drove the prediction? Each score
perturbs the image by the map and measures the softmax probability of the explained class,
batched on the device for every image at once.

- `cam_mult`: the image multiplied by the map; the probability's change (the `grad-cam`
  package's CamMultImageConfidenceChange).
- `road_morf`, `road_lerf`: ROAD (Rong et al. 2022): the most (least) relevant pixels removed
  and filled in by the noisy linear imputer; the probability's change (ROADMostRelevantFirst /
  ROADLeastRelevantFirst). `road_combined`: half of LeRF minus MoRF, each averaged over the
  percentiles 10..90 (ROADCombined).
- `deletion`, `insertion` (Petsiuk et al. 2018, RISE): the area under the probability as the
  pixels are removed (set to the data-set mean), or inserted into a blurred copy, most
  relevant first, in `steps` steps.

The package solves each imputation's sparse system with scipy, one image at a time; here every
image's system is solved together by conjugate gradients on the device (the system is
symmetric positive definite whenever a pixel is kept), to a relative residual of 1e-5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.cifar import MEAN
from ..errors import UserError
from ..model import eval_mode
from ..precision import autocast
from .options import METRICS

# the direction in which a score says "more faithful"
HIGHER_IS_BETTER = {"cam_mult": True, "road_morf": False, "road_lerf": True,
                    "road_combined": True, "deletion": False, "insertion": True}
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # ROADCombined's
DEFAULT_PERCENTILE = {"road_morf": 80, "road_lerf": 20}  # the package's defaults
# The imputer's neighbours (dy, dx) and weights: ROAD's 8-neighbourhood, 1/6 and 1/12.
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
CG_TOLERANCE = 1e-5


def check_metrics(metrics) -> tuple[str, ...]:
    """The metric names, checked: a UserError listing the choices for an unknown one."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown faithfulness metric {unknown[0]!r} (choose from "
                        f"{', '.join(METRICS)})")
    return metrics


def _neighbour_sum(t: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """sum over the 8 neighbours of weight * value, zero outside the image: (B, C, H, W).
    Shifted slices of one zero-padded buffer: several times faster than a conv on the CPU."""
    h, w = t.shape[-2:]
    pad[..., 1:-1, 1:-1] = t
    out = None
    for (dy, dx), weight in NEIGHBOURS:
        s = pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        out = s * weight if out is None else out.add_(s, alpha=weight)
    return out


CG_CHECK_EVERY = 8  # iterations between two convergence checks (each a host sync on a GPU)


def linear_impute(images: torch.Tensor, known: torch.Tensor, noise: float = 0.0,
                  generator: torch.Generator | None = None,
                  tolerance: float = CG_TOLERANCE) -> torch.Tensor:
    """ROAD's noisy linear imputation, batched: every pixel not `known` becomes the weighted
    mean of its 8 neighbours (1/6 beside, 1/12 diagonal, over the neighbours inside the image),
    solved jointly for all of them, plus `noise` x N(0, 1).

    images (B, C, H, W) float; known (B, 1, H, W) bool, at least one pixel per image. The
    system d x - W x = b (d the neighbour weights inside the image) is solved by conjugate
    gradients for every image and channel at once; convergence is read every CG_CHECK_EVERY
    iterations (a host sync each), when the systems that converged leave the batch (those that
    converged in between iterate on, their residuals only smaller).
    """
    x0 = images.float()
    k = known.to(x0.dtype).expand_as(x0)
    u = 1 - k
    pad = x0.new_zeros(*x0.shape[:-2], x0.shape[-2] + 2, x0.shape[-1] + 2)
    d = _neighbour_sum(torch.ones_like(x0), pad)
    b = _neighbour_sum(x0 * k, pad).mul_(u)
    x = torch.zeros_like(x0)
    active = torch.arange(len(x0), device=x0.device)
    r, p, uu, dd = b.clone(), b.clone(), u, d
    rs = (r * r).sum((1, 2, 3))
    stop = (tolerance ** 2) * rs
    for i in range(4 * x0.shape[-1] * x0.shape[-2]):  # CG ends in at most n steps (exactly)
        pad_a = pad[:len(active)]
        ap = (dd * p).sub_(_neighbour_sum(p * uu, pad_a)).mul_(uu)
        alpha = (rs / (p * ap).sum((1, 2, 3)).clamp_min(1e-30)).view(-1, 1, 1, 1)
        x.index_add_(0, active, alpha * p)
        r.addcmul_(alpha, ap, value=-1)
        rs_new = (r * r).sum((1, 2, 3))
        if (i + 1) % CG_CHECK_EVERY == 0:  # the host reads the device: a sync
            going = rs_new > stop
            if not bool(going.any()):
                break
            if not bool(going.all()):  # drop the systems that converged
                keep = going.nonzero().squeeze(1)
                active, r, p, ap, uu, dd = (active[keep], r[keep], p[keep], ap[keep], uu[keep],
                                            dd[keep])
                rs, rs_new, stop = rs[keep], rs_new[keep], stop[keep]
        p.mul_((rs_new / rs.clamp_min(1e-30)).view(-1, 1, 1, 1)).add_(r)
        rs = rs_new
    if noise:
        x += noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x0 * k + x * u).to(images.dtype)


def relevance_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's rank by relevance, 0 for the least relevant (ties by position): (N, H*W)."""
    flat = maps.flatten(1)
    order = flat.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def road_known(ranks: torch.Tensor, percentile: float, most_relevant_first: bool,
               shape: tuple[int, int]) -> torch.Tensor:
    """The pixels ROAD keeps, (N, 1, H, W) bool: as many as the package's percentile threshold
    keeps, floor(p / 100 x (n - 1)) + 1 of n; MoRF keeps the least relevant (removing the
    most relevant), LeRF the most relevant. On a map without ties this is exactly the
    package's `map < np.percentile(map, p)` (of the map, or of 1 - map for LeRF); with ties
    it still removes the stated fraction, where the package's strict threshold can remove
    every pixel and leave its solver a singular system."""
    n = ranks.shape[1]
    keep = math.floor(percentile / 100 * (n - 1)) + 1
    known = ranks < keep if most_relevant_first else ranks >= n - keep
    return known.view(-1, 1, *shape)


@torch.no_grad()
def class_probability(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                      batch_size: int, precision: str) -> torch.Tensor:
    """p(class) of each image under the model (softmax of its logits), in batches: (N,)."""
    out = []
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size].contiguous(memory_format=torch.channels_last)
        with autocast(images.device, precision):
            logits = model(x).float()
        out.append(logits.softmax(1).gather(1, classes[s:s + batch_size, None])[:, 0])
    return torch.cat(out) if out else images.new_zeros(0)


def _blurred(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """A Gaussian blur of each image (insertion's starting point), reflect-padded."""
    radius = math.ceil(2 * sigma)
    t = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = g / g.sum()
    c = images.shape[1]
    x = F.pad(images, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _area(probs: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under (steps + 1, N) probabilities over [0, 1]."""
    return (probs.sum(0) - (probs[0] + probs[-1]) / 2) / (len(probs) - 1)


@dataclass(frozen=True)
class ScoreSettings:
    """How `faithfulness` scores maps: the metric and its knobs, the batch and precision of the
    forwards, and the random stream of ROAD's noise."""
    metric: str = "road_combined"
    percentile: float | None = None  # road_morf and road_lerf (80 and 20 by default)
    noise: float = 0.01  # ROAD's imputation noise (standard deviation; images in [0, 1])
    steps: int = 16  # of the deletion and insertion curves
    batch_size: int = 1024
    precision: str = "fp32"
    generator: torch.Generator | None = None


def _deletion_insertion(model: nn.Module, images: torch.Tensor, ranks: torch.Tensor,
                        classes: torch.Tensor, insertion: bool,
                        s: ScoreSettings) -> torch.Tensor:
    n, hw = ranks.shape
    base = (_blurred(images) if insertion else
            torch.tensor(MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
            .expand_as(images))
    probs = []
    for t in range(s.steps + 1):
        top = ranks >= hw - round(t / s.steps * hw)  # the most relevant t/steps of the pixels
        chosen = top.view(n, 1, *images.shape[-2:])
        x = torch.where(chosen, images, base) if insertion else torch.where(chosen, base, images)
        probs.append(class_probability(model, x, classes, s.batch_size, s.precision))
    return _area(torch.stack(probs))


def faithfulness(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                 classes: torch.Tensor, settings: ScoreSettings = ScoreSettings(),
                 before: torch.Tensor | None = None) -> torch.Tensor:
    """One score per image of how faithful `maps` are to `model`'s probability of `classes`
    (see the module's docstring for each metric): (N,) float32.

    images: float (N, 3, H, W) in [0, 1], as the model takes them; maps: (N, H, W), higher
    meaning more relevant; classes: (N,) the class each map explains. `before`: p(class) of the
    unperturbed images when the caller has it (one forward fewer).
    """
    s = settings
    (metric,) = check_metrics([s.metric])
    classes = torch.as_tensor(classes, device=images.device).long()
    if len(images) == 0:
        return images.new_zeros(0)
    with eval_mode(model):
        p0 = before if before is not None else class_probability(model, images, classes,
                                                                  s.batch_size, s.precision)
        if metric == "cam_mult":
            return class_probability(model, images * maps[:, None], classes, s.batch_size,
                                     s.precision) - p0
        ranks = relevance_ranks(maps)
        if metric in ("deletion", "insertion"):
            return _deletion_insertion(model, images, ranks, classes, metric == "insertion", s)
        plans = ([(s.percentile or DEFAULT_PERCENTILE[metric], metric == "road_morf")]
                 if metric != "road_combined" else
                 [(p, morf) for morf in (True, False) for p in PERCENTILES])
        after = _road(model, images, ranks, classes, plans, s) - p0
    if metric != "road_combined":
        return after[0]
    k = len(PERCENTILES)
    return (after[k:].mean(0) - after[:k].mean(0)) / 2


ROAD_SYSTEMS = 8192  # imputation systems solved at once (a chunk of images, every variant)


def _road(model: nn.Module, images: torch.Tensor, ranks: torch.Tensor, classes: torch.Tensor,
          plans: list[tuple[float, bool]], s: ScoreSettings) -> torch.Tensor:
    """p(class) after each plan's (percentile, MoRF?) imputation: (len(plans), N). The
    variants of a chunk of images are imputed together (at most ROAD_SYSTEMS at once)."""
    n, k = len(images), len(plans)
    out = images.new_empty(k, n)
    chunk = max(1, ROAD_SYSTEMS // k)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        known = torch.cat([road_known(ranks[sl], p, morf, images.shape[-2:])
                           for p, morf in plans])
        x = linear_impute(images[sl].repeat(k, 1, 1, 1), known, s.noise, s.generator)
        out[:, sl] = class_probability(model, x, classes[sl].repeat(k), s.batch_size,
                                       s.precision).view(k, -1)
    return out
