"""The recipe: training options and their checks, the LR/batch rule, the triangular schedule,
and SGD-Nesterov with weight decay on the layers' weights (or, asked, on every parameter), with
BatchNorm's biases at a multiple of the LR when asked; BatchNorm's momentum."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import option, require, require_range
from .average import MODES as AVERAGES
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
    bn_bias_lr_scale: float = option(1.0, "BatchNorm biases train at this multiple of the LR, "
                                     "with their weight decay divided by it (so the decay's "
                                     "pull per step is unchanged); airbench uses 64")
    bn_momentum: float = option(0.1, "BatchNorm's running-statistics momentum (PyTorch's "
                                "sense: the weight of each new batch; airbench's 0.6 is 0.4 "
                                "here)")
    ema: str = option("off", "weight averaging, evaluated and saved as the run's model: ema (an "
                      "exponential moving average of the weights and BatchNorm statistics, "
                      "airbench94's warm-started decay rate^every (step/total)^3); lookahead (the "
                      "same, written back into the weights at each update); off", AVERAGES)
    ema_every: int = option(5, "steps between two updates of the weight average")
    ema_rate: float = option(0.95, "the weight average's decay per step (before the "
                             "(step/total)^3 warm start)")
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
        require_range(prefix, self, "bn_bias_lr_scale", 0, 1e4, low_open=True)
        require_range(prefix, self, "bn_momentum", 0, 1)
        require_range(prefix, self, "ema_every", 1)
        require_range(prefix, self, "ema_rate", 0, 1)
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
    published fast ResNet-18 script). With `bn_bias_lr_scale` s != 1, BatchNorm's biases form a
    third group at s times the LR and 1/s times their weight decay (airbench's bias_scaler)."""
    scale = cfg.bn_bias_lr_scale
    bn_biases = {id(m.bias) for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None} \
        if scale != 1 else set()
    rest = [p for p in model.parameters() if id(p) not in bn_biases]
    decay = [p for p in rest if p.ndim > 1 or cfg.decay == "all"]
    no_decay = [p for p in rest if p.ndim <= 1 and cfg.decay != "all"]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if bn_biases:
        wd = cfg.weight_decay if cfg.decay == "all" else 0.0
        groups.append({"params": [p for p in model.parameters() if id(p) in bn_biases],
                       "lr": peak_lr(cfg) * scale, "weight_decay": wd / scale})
    return torch.optim.SGD(groups, lr=peak_lr(cfg), momentum=cfg.momentum, nesterov=True,
                           fused=device.type == "cuda")


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Every BatchNorm layer's running-statistics momentum."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def make_schedule(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Triangular schedule over every step of the run (see `lr_factor`)."""
    total = cfg.epochs * steps_per_epoch
    peak = min(cfg.peak_epoch, cfg.epochs) * steps_per_epoch  # lr_factor moves it to mid-run
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, peak, cfg.lr_start))
