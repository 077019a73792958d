"""The model: the seed's CIFAR ResNet-18 (11,173,962 parameters), owning its normalisation."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from .data.cifar import MEAN, STD
from .model_options import INITS

@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's own train/eval flag restored exactly afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class CifarResNet18(ResNet):
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool; takes images in [0, 1]."""

    def __init__(self, num_classes: int = 10, init: str = "torchvision"):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {init!r}")
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        if init == "pytorch":  # undo torchvision's re-initialisation: each layer's own default
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    m.reset_parameters()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) float in [0, 1] -> (N, num_classes) logits."""
        return super().forward((x - self.mean) / self.std)


def resnet18(num_classes: int = 10, init: str = "torchvision") -> CifarResNet18:
    """The CIFAR ResNet-18 of the seed: BasicBlocks [2, 2, 2, 2] at 64/128/256/512, linear
    512->10; `init` (INITS) its initial weights only (a saved model loads into either)."""
    return CifarResNet18(num_classes, init)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> str:
    """Layer-by-layer table (output shape, parameters), in the seed's torchsummary layout."""
    shown = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, BasicBlock)
    rows, hooks = [], []

    def hook(module, _inputs, output):
        own = sum(p.numel() for p in module.parameters(recurse=not isinstance(module, BasicBlock)))
        rows.append((f"{type(module).__name__}-{len(rows) + 1}", [-1, *output.shape[1:]], own))

    for module in model.modules():
        if isinstance(module, shown):
            hooks.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(2, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    line = "-" * 64
    out = [line, f"{'Layer (type)':>25}  {'Output Shape':>25} {'Param #':>10}", "=" * 64]
    out += [f"{name:>25}  {str(shape):>25} {params:>10,}" for name, shape, params in rows]
    total = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out += ["=" * 64, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}", line,
            f"Params size (MB): {total * 4 / 2**20:.2f}", line]
    return "\n".join(out)
