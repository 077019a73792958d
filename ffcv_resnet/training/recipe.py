"""The recipe: the training options (declared in finished/settings.py), the triangular schedule,
and SGD-Nesterov with weight decay on the layers' weights (or, asked, on every parameter), with
BatchNorm's biases at a multiple of the LR when asked; BatchNorm's momentum."""
from __future__ import annotations

import torch
from torch import nn

from ..finished.settings import TrainConfig, peak_lr  # noqa: F401 (the recipe's options)


def lr_factor(step: int, total: int, peak: float, start: float = 0.0) -> float:
    """Fraction of the peak LR used by step `step` (0-based) of `total`: rises linearly from
    `start` to 1 at step `peak` (rounded to a whole step, and moved to the middle of the run when
    later), then falls linearly to 0 at the last step (a one-step run takes it at the peak)."""
    k, p = step + 1, min(max(1, round(peak)), max(1, total // 2))
    return start + (1 - start) * k / p if k <= p else max(0.0, (total - k) / max(total - p, 1))


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
