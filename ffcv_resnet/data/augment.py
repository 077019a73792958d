"""Batched augmentation on the device: reflect-padded random crop, horizontal flip, cutout, in
one of two orders. Flips are drawn at random, or alternate per image across epochs (airbench's
rule: a random choice in epoch 0, then the opposite of the previous epoch's), decided from the
image's beton index and the epoch alone, so a resumed or sharded run flips the same images.

Tensor ops over the whole batch, no per-image Python. Random draws come from a seeded generator on
the batch's device and are kept apart from how they are applied, so a run can be repeated and the
ops can be checked against their draws.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cifar import MEAN  # cutout fills with the mean: zero after normalisation
from .options import AugmentConfig

@dataclass
class Draws:
    """Per-image random choices for one batch (all (B,) tensors on the batch's device)."""
    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    cy: torch.Tensor
    cx: torch.Tensor


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1], channels_last."""
    return images.float().div_(255).contiguous(memory_format=torch.channels_last)


def draw(cfg: AugmentConfig, batch: int, size: int, generator: torch.Generator) -> Draws:
    """Sample crop offsets, flip flags and cutout corners for a batch."""
    dev = generator.device

    def ints(high: int) -> torch.Tensor:
        return torch.randint(0, high, (batch,), device=dev, generator=generator)

    return Draws(dy=ints(2 * cfg.pad + 1), dx=ints(2 * cfg.pad + 1),
                 flip=ints(2).bool() if cfg.flip != "off" else torch.zeros(batch, dtype=torch.bool,
                                                                          device=dev),
                 cy=ints(size - cfg.cutout + 1), cx=ints(size - cfg.cutout + 1))


def alternating_flips(first: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
    """(B,) bool: image `index[i]` is flipped in `epoch` (from 0) exactly when its epoch-0 flip
    `first[index[i]]` is, in even epochs, and exactly when it is not, in odd ones."""
    return first[index] ^ bool(epoch % 2)


def crop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image's (H, W) window at (dy, dx) of its reflect-padded copy."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), channels_last in memory


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right exactly the images where `mask` is True."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def mean_colour(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The data-set mean colour as a (1, 3, 1, 1) tensor on `device` (built from Python floats:
    a host-to-device copy, so BatchAugment builds it once, not per batch)."""
    return torch.tensor(MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int,
           fill: torch.Tensor | None = None) -> torch.Tensor:
    """Fill a size x size square with top-left corner (cy, cx) with `fill` (by default the
    data-set mean colour)."""
    if size == 0:
        return x
    ar_h = torch.arange(x.shape[2], device=x.device)
    ar_w = torch.arange(x.shape[3], device=x.device)
    in_rows = (ar_h[None] >= cy[:, None]) & (ar_h[None] < cy[:, None] + size)  # (B, H)
    in_cols = (ar_w[None] >= cx[:, None]) & (ar_w[None] < cx[:, None] + size)  # (B, W)
    square = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
    fill = mean_colour(x.device, x.dtype) if fill is None else fill
    return torch.where(square, fill, x)


def apply(x: torch.Tensor, d: Draws, cfg: AugmentConfig,
          fill: torch.Tensor | None = None) -> torch.Tensor:
    """The three operations as drawn, in `cfg.order`: crop, flip, cut out; or flip, cut out,
    then crop (translate) the cut-out image. `fill`: cutout's colour (see `cutout`)."""
    if cfg.order == "flip_cutout_translate":
        return crop(cutout(flip(x, d.flip), d.cy, d.cx, cfg.cutout, fill), d.dy, d.dx, cfg.pad)
    return cutout(flip(crop(x, d.dy, d.dx, cfg.pad), d.flip), d.cy, d.cx, cfg.cutout, fill)


class BatchAugment:
    """uint8 batch -> augmented float batch in [0, 1], channels_last, reproducible from a seed.

    With alternating flips, `images` (how many the beton holds) and `flip_seed` (the same in
    every process of a run) fix each image's epoch-0 flip; the other draws come from `seed`."""

    def __init__(self, cfg: AugmentConfig, device: torch.device, seed: int = 0,
                 images: int = 0, flip_seed: int = 0):
        cfg.validate("augment")
        self.cfg = cfg
        self.generator = torch.Generator(device=torch.device(device)).manual_seed(seed)
        self.fill = mean_colour(torch.device(device))  # once: a copy to the device
        self.first_flip = None  # (images,) bool on the device: each image's flip in epoch 0
        if cfg.flip == "alternate":
            if images < 1:
                raise ValueError("alternating flips key on each image's index in the beton: "
                                 "give BatchAugment the beton's image count (images=...)")
            g = torch.Generator().manual_seed(flip_seed)
            self.first_flip = torch.randint(0, 2, (images,), generator=g).bool().to(device)

    def state_dict(self) -> dict:
        """The generator's state: a resumed run draws what the uninterrupted one would have."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __call__(self, images: torch.Tensor, index: torch.Tensor | None = None,
                 epoch: int = 0) -> torch.Tensor:
        """Augment a batch; `index` (each image's beton index) and `epoch` (from 0) decide
        alternating flips."""
        x = to_float(images)
        d = draw(self.cfg, x.shape[0], x.shape[2], self.generator)
        if self.first_flip is not None:
            if index is None:
                raise ValueError("alternating flips need each image's beton index")
            d.flip = alternating_flips(self.first_flip, index, epoch)
        return apply(x, d, self.cfg, self.fill).contiguous(memory_format=torch.channels_last)
