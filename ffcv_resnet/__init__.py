"""ffcv_resnet: fast ResNet-18 training on CIFAR-10 with FFCV, and batched Grad-CAM of its errors.

The data flows through the subpackages in one direction, and imports follow it:

    data/      sources -> betons -> loaders -> augment        (CIFAR-10 to uint8 batches on the device)
    model.py   the CIFAR ResNet-18, normalisation inside
    finished/  a run's settings, model.pt, evaluation with TTA (what uses a finished model needs)
    training/  recipe -> loop -> engine -> runner              (a run folder, metrics.json last)
    explain/   cams, faithfulness -> explain -> gallery, figures, report  (every test error)
    compare/   two runs or two groups of seeds: did a change help, and on which images
    predict/   a finished run's model on your own images
    reproduce/ every headline figure in one command
    the ground under them: config, errors, io, records, run_folder, device, precision, timing,
    png, pages

The names below are imported on first use (PEP 562), so that light entry points such as the
data preparation's up-to-date check start without loading torch.
"""
from __future__ import annotations

import importlib

_LAZY = {"resnet18": "model", "grad_cam": "explain.cams", "cams": "explain.cams",
         "CamResult": "explain.cams", "CamSettings": "explain.cams",
         "faithfulness": "explain.faithfulness", "ScoreSettings": "explain.faithfulness",
         "CLASSES": "data.cifar", "load_model": "predict.model",
         "predict_images": "predict.model", "TrainedModel": "predict.model"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
