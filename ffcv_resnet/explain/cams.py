"""The CAM family from one forward and one backward per class set: Grad-CAM, Grad-CAM++,
XGrad-CAM, HiResCAM and LayerCAM are reductions of the same activations and gradients, Eigen-CAM
of the activations alone, and Score-CAM weighs each channel by the class score of the image it
masks (batched forwards: expensive, off by default).

Each method matches the `grad-cam` package's class of the same name (the tests check it): the
map is the method's channel-weighted activations, then ReLU, bilinear upsampling to the image,
and min-max scaling per image (a map that is flat after the ReLU is returned as zeros and
flagged `empty`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..model import eval_mode
from ..precision import autocast
from .activations import class_sets_of, feature_maps, find_layer
from .options import DEFAULT_METHODS, METHODS

Reduction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (acts, grads) -> raw map


class CamResult(NamedTuple):
    maps: torch.Tensor  # (N, H, W) float32 in [0, 1]; (K, N, H, W) for K class sets
    empty: torch.Tensor  # (N,) or (K, N) bool: the map was flat after the ReLU, returned as zeros
    logits: torch.Tensor  # (N, classes) float32, from the same forward pass


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum((-2, -1), keepdim=True)


def gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Channels weighted by their mean gradient (Selvaraju et al. 2017)."""
    return (g.mean((-2, -1), keepdim=True) * a).sum(-3)


def gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Positive gradients weighted by the second/third-order alphas of eq. 19 (Chattopadhyay
    et al. 2018), in the package's form."""
    g2 = g * g
    alpha = torch.where(g != 0, g2 / (2 * g2 + _spatial_sum(a) * g2 * g + 1e-6), 0.0)
    return (_spatial_sum(F.relu(g) * alpha) * a).sum(-3)


def xgradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gradients weighted by the normalised activations (Fu et al. 2020)."""
    return (_spatial_sum(g * a / (_spatial_sum(a) + 1e-7)) * a).sum(-3)


def hirescam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The element-wise product of gradients and activations, summed over channels (Draelos
    and Carin 2020): faithful to the model's computation at that layer."""
    return (g * a).sum(-3)


def layercam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Activations weighted by their positive gradients, pixel by pixel (Jiang et al. 2021)."""
    return (F.relu(g) * a).sum(-3)


def eigencam(a: torch.Tensor) -> torch.Tensor:
    """The activations' first principal component (Muhammad and Yeasin 2020): no gradient, the
    same map for every class. The centred (h*w, C) activations X project onto their first right
    singular vector: X v1 = s1 u1, taken from the top eigenpair of the small (h*w, h*w) Gram
    matrix X X^T (5x faster than an SVD of X on a CPU). Its sign is arbitrary: the component is
    turned so that its largest magnitude is positive (the package's sign correction, from its
    Seg-Eigen-CAM)."""
    n, c, h, w = a.shape
    x = a.float().flatten(2).transpose(1, 2)  # (N, h*w, C)
    x = x - x.mean(1, keepdim=True)
    gram = x @ x.transpose(1, 2)  # (N, h*w, h*w)
    # on the host: CUDA's batched eigh solves matrices above 32 x 32 one at a time (about
    # 0.8 s for 600 of 64 x 64); LAPACK on the CPU does them all in a fraction of that, and the
    # copies are 10 MB each way
    values, vectors = (t.to(gram.device) for t in torch.linalg.eigh(gram.cpu()))  # ascending
    proj = (vectors[..., -1] * values[..., -1:].clamp_min(0).sqrt()).view(n, h, w)
    flip = proj.amin((1, 2)).abs() > proj.amax((1, 2)).abs()
    return torch.where(flip[:, None, None], -proj, proj)


GRADIENT_METHODS: dict[str, Reduction] = {"gradcam": gradcam, "gradcampp": gradcampp,
                                          "xgradcam": xgradcam, "hirescam": hirescam,
                                          "layercam": layercam}


def check_methods(methods) -> tuple[str, ...]:
    """The method names, checked: a UserError listing the choices for an unknown one."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"unknown CAM method {unknown[0] if unknown else '(none)'!r} "
                        f"(choose from {', '.join(METHODS)})")
    return methods


def upsample_and_scale(cam: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """(..., h, w) raw maps -> ReLU, bilinear to `size`, min-max per map: maps in [0, 1] and
    the flags of maps that were flat (returned as zeros)."""
    lead = cam.shape[:-2]
    cam = F.interpolate(F.relu(cam.float()).reshape(-1, 1, *cam.shape[-2:]), size=size,
                        mode="bilinear", align_corners=False).view(*lead, *size)
    lo = cam.amin((-2, -1), keepdim=True)
    span = cam.amax((-2, -1), keepdim=True) - lo
    maps = torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), 0.0)
    return maps, span[..., 0, 0] <= 0


@torch.no_grad()
def _scorecam(model: nn.Module, images: torch.Tensor, acts: torch.Tensor,
              class_sets: torch.Tensor, precision: str, chunk: int = 512) -> torch.Tensor:
    """Score-CAM's weights times the activations, (K, N, h, w): every channel's upsampled,
    min-max scaled activation masks the image, and the softmax over channels of the chosen
    class's logit for those masked images weighs the channel (Wang et al. 2020)."""
    n, c = acts.shape[:2]
    up = F.interpolate(acts.float(), size=images.shape[-2:], mode="bilinear",
                       align_corners=True)  # the package's UpsamplingBilinear2d
    lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
    up = (up - lo) / (hi - lo + 1e-8)  # (N, C, H, W)
    scores = []
    for i in range(n):  # each image's C masked copies, in chunks of forwards
        masked = images[i, None] * up[i, :, None]  # (C, 3, H, W)
        with autocast(images.device, precision):
            logits = torch.cat([model(masked[s:s + chunk].contiguous(
                memory_format=torch.channels_last)).float() for s in range(0, c, chunk)])
        scores.append(logits[:, class_sets[:, i]].T)  # (K, C)
    weights = torch.stack(scores, 1).softmax(-1)  # (K, N, C)
    return (weights[..., None, None] * acts.float()).sum(2)


def _cams_batch(model: nn.Module, layer: nn.Module, images: torch.Tensor,
                class_sets: torch.Tensor, methods: tuple[str, ...],
                precision: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Raw (K, N, h, w) maps of each method and the forward's logits, one batch."""
    acts, logits, grads = feature_maps(model, layer, images, class_sets, precision,
                                       need_grads=any(m in GRADIENT_METHODS for m in methods))
    a, k = acts.detach().float(), len(class_sets)
    raw = {}
    for m in methods:
        if m in GRADIENT_METHODS:
            raw[m] = GRADIENT_METHODS[m](a, grads)
        elif m == "eigencam":
            raw[m] = eigencam(a).expand(k, *a.shape[:1], *a.shape[2:])
        else:
            raw[m] = _scorecam(model, images, a, class_sets, precision)
    return raw, logits


@dataclass(frozen=True)
class CamSettings:
    """Which maps `cams` computes and how."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    layer: str = "layer3"  # the module whose activations (and gradients) the methods weigh
    batch_size: int | None = None  # images per forward (None: all at once)
    precision: str = "fp32"


def cams(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
         settings: CamSettings = CamSettings()) -> dict[str, CamResult]:
    """Maps of every method in `settings.methods` for `classes` of `images`, from one forward
    and one backward per class set and batch: {method: CamResult}.

    images: float (N, 3, H, W) in [0, 1]; classes: (N,) one per image, giving (N, H, W) maps
    and (N,) flags, or (K, N) class sets, giving (K, N, H, W) and (K, N). Every result holds the
    same (N, classes) logits of that forward.
    """
    methods, precision = check_methods(settings.methods), settings.precision
    one = torch.as_tensor(classes).ndim == 1
    class_sets = class_sets_of(images, classes)  # (K, N)
    module = find_layer(model, settings.layer)
    step = settings.batch_size or max(len(images), 1)
    parts = []
    with eval_mode(model):
        for i in range(0, len(images), step):
            parts.append(_cams_batch(model, module, images[i:i + step],
                                     class_sets[:, i:i + step], methods, precision))
    out = {}
    logits = torch.cat([p[1] for p in parts]) if parts else images.new_zeros(0, 0)
    for m in methods:
        raw = torch.cat([p[0][m] for p in parts], 1) if parts else \
            images.new_zeros(len(class_sets), 0, 1, 1)
        maps, empty = upsample_and_scale(raw, images.shape[-2:])
        out[m] = CamResult(maps[0], empty[0], logits) if one else CamResult(maps, empty, logits)
    return out


def grad_cams(model: nn.Module, images: torch.Tensor, class_sets: torch.Tensor,
              layer: str = "layer3", batch_size: int | None = None,
              precision: str = "fp32") -> CamResult:
    """Grad-CAM maps of K classes per image from one forward per batch: `class_sets` (K, N)
    gives (K, N, H, W) maps and (K, N) flags, and the (N, classes) logits of that forward."""
    class_sets = class_sets_of(images, class_sets)  # (K, N) even when K is 1
    return cams(model, images, class_sets,
                CamSettings(("gradcam",), layer, batch_size, precision))["gradcam"]


def grad_cam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
             layer: str = "layer3", batch_size: int | None = None,
             precision: str = "fp32") -> CamResult:
    """Grad-CAM maps of `classes` (one per image) at `layer`, for images as the model takes them.

    images: float (N, 3, H, W) in [0, 1]; returns (N, H, W) maps in [0, 1], min-max scaled per
    image, with `empty` flagging maps that were all zero after the ReLU (returned as zeros).
    """
    if torch.as_tensor(classes).ndim != 1:
        raise ValueError(f"need one class per image: {len(images)} images, "
                         f"{tuple(torch.as_tensor(classes).shape)} classes")
    return cams(model, images, classes,
                CamSettings(("gradcam",), layer, batch_size, precision))["gradcam"]
