"""ffcv_resnet: fast ResNet-18 training on CIFAR-10 with FFCV, and batched Grad-CAM of its errors.

`resnet18` and `grad_cam` are imported on first use (PEP 562), so that light entry points such as
the data preparation's up-to-date check start without loading torch.
"""
from __future__ import annotations

import importlib

_LAZY = {"resnet18": "model", "grad_cam": "gradcam", "CamResult": "gradcam",
         "CLASSES": "cifar"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
