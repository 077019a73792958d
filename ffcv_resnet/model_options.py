"""The network's name in checkpoints and its --model.* options, declared without torch (a script
checks its options before loading it); the network itself is model.py."""
from __future__ import annotations

from dataclasses import dataclass

from .config import option

ARCH = "resnet18-cifar"  # what a checkpoint must say it holds
INITS = ("torchvision", "pytorch")


@dataclass(frozen=True)
class ModelConfig:
    """Model: the CIFAR ResNet-18's initial weights"""
    init: str = option("torchvision", "initial weights: torchvision (its ResNet's Kaiming-normal "
                       "fan-out convolutions) or pytorch (every layer's own default, as the "
                       "published fast ResNet-18 script builds it)", INITS)
