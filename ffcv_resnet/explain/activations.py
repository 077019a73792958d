"""A layer's activations and their gradients for one or more class sets, from one forward and one
backward per set, on the device, hooks always removed: what every CAM method reduces.

The forward records no graph before the chosen layer; each class set's backward runs only from
the logits down to that layer and computes no parameter gradients. Several class sets per image
(the predicted and the true class) share the one forward: its graph is kept for each backward."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..errors import UserError
from ..model import eval_mode
from ..precision import autocast


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
    if seen[0].shape[-1] * seen[0].shape[-2] < 2:  # every method's map would be one flat pixel
        raise UserError(f"layer '{layer}' gives a {seen[0].shape[-2]}x{seen[0].shape[-1]} feature "
                        "map: no place to point at; choose a convolutional stage such as layer3")
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


def class_sets_of(images: torch.Tensor, classes) -> torch.Tensor:
    """`classes` (N,) or (K, N) as a (K, N) long tensor on the images' device; ValueError
    unless there is one class per image."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, 3, H, W), got {tuple(images.shape)} "
                         f"{images.dtype}")
    sets = torch.as_tensor(classes, device=images.device).long()
    sets = sets[None] if sets.ndim == 1 else sets
    if sets.ndim != 2 or sets.shape[1] != len(images) or not len(sets):
        raise ValueError(f"need one class per image: {len(images)} images, "
                         f"{tuple(sets.shape[-1:])} classes")
    return sets


def feature_maps(model: nn.Module, layer: nn.Module, images: torch.Tensor,
                 class_sets: torch.Tensor, precision: str = "fp32", need_grads: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One batch: the layer's activations (N, C, h, w), the logits (N, classes) float32 and,
    when `need_grads`, d(each set's chosen logits)/d(activations) as (K, N, C, h, w) float32,
    from one forward and one backward per class set. The model should be in eval mode (each
    image's gradient then comes from its own logit alone)."""
    if not need_grads:  # activations only: no graph at all
        seen: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            with torch.no_grad(), autocast(images.device, precision):
                logits = model(images)
        finally:
            handle.remove()
        if not seen:
            raise ValueError("the chosen layer did not run in the model's forward pass")
        return seen[-1], logits.float(), None
    with _graph_from(layer) as leaves, autocast(images.device, precision):
        logits = model(images.detach())
    if not leaves:
        raise ValueError("the chosen layer did not run in the model's forward pass")
    acts = leaves[-1]
    return acts.detach(), logits.detach().float(), _class_grads(logits, acts, class_sets).float()
