"""The recipe: training options and their checks, the LR/batch rule, the triangular schedule,
and SGD-Nesterov with weight decay on the layers' weights (or, asked, on every parameter)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import option, require, require_range
from ..precision import PRECISIONS, AUTO_PRECISION, TTA, resolve_precision
from ..device import check_device, device_option

BASE_BATCH = 512  # --training.lr is the peak LR at this batch size; others scale linearly


@dataclass(frozen=True)
class TrainConfig:
    """Training: recipe, precision, compilation"""
    epochs: int = option(20, "training epochs")
    batch_size: int = option(512, "training batch size, global: with torchrun each of the N "
                             "processes takes batch_size/N of every step (it must divide by N), "
                             "so 1 and N processes share one recipe and schedule")
    lr: float = option(0.4, f"peak learning rate at batch {BASE_BATCH}; the LR used is scaled "
                       f"linearly with the batch size (lr x batch_size / {BASE_BATCH})")
    lr_start: float = option(0.0, "where the warm-up starts, as a fraction of the peak: the "
                             "factor rises linearly from it at step 0 to 1 at the peak step, "
                             "and step k (from 1) takes the factor at k, so the first step "
                             "takes lr_start + (1 - lr_start) / peak_steps")
    peak_epoch: float = option(4.0, "epoch at which the triangular LR schedule peaks (from 0 "
                               "to the peak, then down to 0 at the last step); a peak past the "
                               "middle of the run is moved to the middle")
    momentum: float = option(0.9, "SGD Nesterov momentum")
    weight_decay: float = option(5e-4, "weight decay (on what --training.decay says)")
    decay: str = option("weights", "what weight decay applies to: weights (of convolutions and "
                        "the linear layer; not BatchNorm's weights and biases nor the linear "
                        "bias) or all (every parameter)", ("weights", "all"))
    label_smoothing: float = option(0.1, "label smoothing of the training loss")
    precision: str = option("auto", AUTO_PRECISION, PRECISIONS)
    channels_last: bool = option(True, "channels_last model and inputs")
    compile: str = option("auto", "torch.compile (auto: on CUDA only)", ("auto", "on", "off"))
    compile_mode: str = option("default", "torch.compile mode (the benchmark compares them)",
                               ("default", "reduce-overhead", "max-autotune",
                                "max-autotune-no-cudagraphs"))
    compile_cache: str = option("~/.cache/ffcv_resnet/inductor",
                                "torch.compile's on-disk cache, kept between runs", resumable=True)
    tta: str = option("flip", "test-time augmentation at evaluation: none; flip (image and "
                      "mirror); flip_translate (also 1-pixel shifts, as the published recipe)",
                      TTA)
    eval_every: int = option(1, "evaluate every N epochs (0: only after the last)")
    eval_batch_size: int = option(1000, "evaluation batch size")
    sync_bn: bool = option(False, "with torchrun: BatchNorm statistics over the whole global "
                           "batch (SyncBatchNorm, CUDA only). Off: each process normalises over "
                           "its share, as the recipe was tuned, without an all-reduce per layer")
    seed: int = option(0, "seed of weights, data order and augmentation")
    device: str = device_option(resumable=True)

    def validate(self, prefix: str) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            require_range(prefix, self, name, 1)
        require_range(prefix, self, "lr", 0, low_open=True)
        require(math.isfinite(peak_lr(self)), f"{prefix}.lr", self.lr,
                f"a finite LR once scaled to batch {self.batch_size}")
        require_range(prefix, self, "peak_epoch", 0, low_open=True)
        require_range(prefix, self, "lr_start", 0, 1)
        require_range(prefix, self, "momentum", 0, 1, low_open=True, high_open=True)  # Nesterov
        require_range(prefix, self, "weight_decay", 0)
        require_range(prefix, self, "label_smoothing", 0, 1, high_open=True)
        require_range(prefix, self, "eval_every", 0)
        require_range(prefix, self, "seed", 0, 2**31 - 1)
        check_device(prefix, self.device)
        require(bool(self.compile_cache.strip()), f"{prefix}.compile_cache", self.compile_cache,
                "a folder")


def peak_lr(cfg: TrainConfig) -> float:
    """The peak LR the optimiser uses: --training.lr scaled linearly from batch BASE_BATCH."""
    return cfg.lr * cfg.batch_size / BASE_BATCH


def lr_factor(step: int, total: int, peak: float, start: float = 0.0) -> float:
    """Fraction of the peak LR used by step `step` (0-based) of `total`: rises linearly from
    `start` to 1 at step `peak` (rounded to a whole step, and moved to the middle of the run when
    later), then falls linearly to 0 at the last step (a one-step run takes it at the peak)."""
    k, p = step + 1, min(max(1, round(peak)), max(1, total // 2))
    return start + (1 - start) * k / p if k <= p else max(0.0, (total - k) / max(total - p, 1))


def resolved(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Turn 'auto' settings into what this device gets."""
    cuda = device.type == "cuda"
    return dataclasses.replace(
        cfg, precision=resolve_precision(cfg.precision, device),
        compile=("on" if cuda else "off") if cfg.compile == "auto" else cfg.compile)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """SGD with Nesterov momentum. Weight decay on the weights of convolutions and the linear
    layer only (`decay` weights: every parameter of one dimension, i.e. BatchNorm's weights and
    biases and the linear layer's bias, gets none), or on every parameter (`decay` all, as the
    published fast ResNet-18 script)."""
    decay = [p for p in model.parameters() if p.ndim > 1 or cfg.decay == "all"]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 and cfg.decay != "all"]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=peak_lr(cfg), momentum=cfg.momentum, nesterov=True,
                           fused=device.type == "cuda")


def make_schedule(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Triangular schedule over every step of the run (see `lr_factor`)."""
    total = cfg.epochs * steps_per_epoch
    peak = min(cfg.peak_epoch, cfg.epochs) * steps_per_epoch  # lr_factor moves it to mid-run
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, peak, cfg.lr_start))
