"""Batched Grad-CAM on the device: one forward per batch, hooks always removed.

The forward records no graph before the chosen layer; each class set's backward runs only from
the logits down to that layer and computes no parameter gradients. Several class sets per image
(the predicted and the true class) share the one forward: its graph is kept for each backward."""
from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..model import eval_mode
from ..precision import autocast


class CamResult(NamedTuple):
    maps: torch.Tensor  # (N, H, W) float32 in [0, 1]; (K, N, H, W) from grad_cams
    empty: torch.Tensor  # (N,) or (K, N) bool: the map was flat after the ReLU, returned as zeros
    logits: torch.Tensor  # (N, classes) float32, from the same forward pass


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module called `layer` in `model.named_modules()`, or a UserError naming the choices."""
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        top = ", ".join(n for n in modules if n and "." not in n)
        raise UserError(f"no layer '{layer}' in the model (top-level layers: {top})")
    return modules[layer]


def check_layer(model: nn.Module, layer: str) -> nn.Module:
    """`find_layer`, plus a UserError unless the layer's output is a (B, C, H, W) feature map."""
    module, seen = find_layer(model, layer), []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device))
    finally:
        handle.remove()
    if not (seen and isinstance(seen[0], torch.Tensor) and seen[0].ndim == 4):
        shape = tuple(seen[0].shape) if seen and isinstance(seen[0], torch.Tensor) else None
        raise UserError(f"layer '{layer}' gives no feature map to weigh (output {shape}); "
                        "choose a convolutional stage such as layer3")
    return module


@contextlib.contextmanager
def _graph_from(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Run the model with no autograd graph up to `module`; its output becomes a fresh leaf that
    requires grad, with grad mode on from there to the logits. Nothing before the layer is kept
    for backward (less memory, a faster forward), and the hook and grad mode are restored
    however the block ends."""
    leaves: list[torch.Tensor] = []

    def hook(_m, _inputs, out):
        torch.set_grad_enabled(True)  # from this layer on, record the graph
        leaf = out.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    handle = module.register_forward_hook(hook)
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        yield leaves
    finally:
        torch.set_grad_enabled(previous)
        handle.remove()


def _class_grads(logits: torch.Tensor, acts: torch.Tensor,
                 class_sets: torch.Tensor) -> torch.Tensor:
    """d(sum of each set's chosen logits)/d(acts): (K, N, C, h, w), one backward per set over the
    same graph (kept until the last). Eval mode keeps images independent, so image i's gradient
    comes from its own logit alone. On a 2-core CPU this is as fast as one vmapped backward
    (`is_grads_batched`), and it needs no batching rules."""
    grads = []
    for k, classes in enumerate(class_sets):
        chosen = logits.gather(1, classes[:, None]).sum()
        (g,) = torch.autograd.grad(chosen, acts, retain_graph=k < len(class_sets) - 1)
        grads.append(g)  # only the activation's gradient, no parameters'
    return torch.stack(grads)


def _cam_batch(model: nn.Module, layer: nn.Module, images: torch.Tensor,
               class_sets: torch.Tensor, precision: str) -> CamResult:
    with _graph_from(layer) as leaves, autocast(images.device, precision):
        logits = model(images.detach())
    if not leaves:
        raise ValueError("the chosen layer did not run in the model's forward pass")
    acts = leaves[-1]  # (N, C, h, w)
    grads = _class_grads(logits, acts, class_sets).float()  # (K, N, C, h, w); CAM in fp32
    weights = grads.mean(dim=(3, 4), keepdim=True)  # (K, N, C, 1, 1)
    cam = F.relu((weights * acts.detach().float()).sum(2, keepdim=True))  # (K, N, 1, h, w)
    k, n = cam.shape[:2]
    cam = F.interpolate(cam.flatten(0, 1), size=images.shape[-2:], mode="bilinear",
                        align_corners=False).view(k, n, *images.shape[-2:])
    lo = cam.amin(dim=(2, 3), keepdim=True)
    span = cam.amax(dim=(2, 3), keepdim=True) - lo
    empty = span.flatten(1) <= 0
    maps = torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), 0.0)
    return CamResult(maps, empty, logits.detach().float())


def grad_cams(model: nn.Module, images: torch.Tensor, class_sets: torch.Tensor,
              layer: str = "layer3", batch_size: int | None = None,
              precision: str = "fp32") -> CamResult:
    """Grad-CAM maps of K classes per image from one forward per batch: `class_sets` (K, N)
    gives (K, N, H, W) maps and (K, N) flags, and the (N, classes) logits of that forward.

    images: float (N, 3, H, W) in [0, 1]; maps in [0, 1], min-max scaled per image and class,
    with `empty` flagging maps that were all zero after the ReLU (returned as zeros).
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, 3, H, W), got {tuple(images.shape)} "
                         f"{images.dtype}")
    class_sets = torch.as_tensor(class_sets, device=images.device).long()
    if class_sets.ndim != 2 or class_sets.shape[1] != len(images) or not len(class_sets):
        raise ValueError(f"need one class per image: {len(images)} images, "
                         f"{tuple(class_sets.shape[-1:])} classes")
    module = find_layer(model, layer)
    step = batch_size or max(len(images), 1)
    with eval_mode(model):
        parts = [_cam_batch(model, module, images[i:i + step], class_sets[:, i:i + step],
                            precision) for i in range(0, len(images), step)]
    if not parts:
        k = len(class_sets)
        return CamResult(images.new_zeros(k, 0, *images.shape[-2:]),
                         torch.zeros(k, 0, dtype=torch.bool, device=images.device),
                         images.new_zeros(0, 0))
    maps, empty, logits = zip(*parts)
    return CamResult(torch.cat(maps, 1), torch.cat(empty, 1), torch.cat(logits))


def grad_cam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
             layer: str = "layer3", batch_size: int | None = None,
             precision: str = "fp32") -> CamResult:
    """Grad-CAM maps of `classes` (one per image) at `layer`, for images as the model takes them.

    images: float (N, 3, H, W) in [0, 1]; returns (N, H, W) maps in [0, 1], min-max scaled per
    image, with `empty` flagging maps that were all zero after the ReLU (returned as zeros).
    """
    classes = torch.as_tensor(classes, device=images.device)
    if classes.ndim != 1:
        raise ValueError(f"need one class per image: {len(images)} images, "
                         f"{tuple(classes.shape)} classes")
    res = grad_cams(model, images, classes[None], layer, batch_size, precision)
    return CamResult(res.maps[0], res.empty[0], res.logits)
