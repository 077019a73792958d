"""A finished run's model for your own images: `load_model` checks the run folder as explain does
(one complete run, every file of one run id, finite weights) and `predict_images` gives each
image's top classes, with the run's own test-time augmentation and precision, and the CAM map of
the predicted class.

    from PIL import Image
    from ffcv_resnet import load_model, predict_images
    model = load_model("runs/main", "cpu")
    for p in predict_images(model, [Image.open("cat.jpg")], top=3):
        print(p.predicted, f"{p.probability:.1%}", p.top)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.augment import to_float
from ..device import resolve_device
from ..errors import UserError
from ..explain.cams import CamSettings, check_methods, cams
from ..finished.run import load_finished_run
from ..precision import PRECISIONS, resolve_precision
from ..run_folder import RunFolder
from ..finished.evaluate import predict
from .images import SIZE, prepare


@dataclass
class TrainedModel:
    """A finished run's eager model in eval mode, with what its evaluation used."""
    module: nn.Module
    classes: list[str]
    tta: str  # the run's test-time augmentation: none, flip or flip_translate
    precision: str  # resolved on `device`: the run's own setting unless asked otherwise
    device: torch.device
    run_id: str
    run_dir: str


@dataclass
class Prediction:
    """One image: the predicted class, its probability, the top k, and the predicted class's
    CAM map over the 32x32 view (None when no method was asked for)."""
    predicted: str
    probability: float
    top: list[tuple[str, float]]
    cam: np.ndarray | None  # (32, 32) float32 in [0, 1]
    cam_empty: bool  # the map was flat after the ReLU (drawn as zeros)


def load_model(run_dir: str | Path, device: str | torch.device = "cpu",
               precision: str = "run") -> TrainedModel:
    """The finished run in `run_dir` on `device` (a torch device or 'auto'); `precision`: the
    run's own (run) or one of auto, bf16, fp16, fp32. UserError (one line) for a missing,
    incomplete, mixed or damaged run."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder")
    device = resolve_device(str(device))
    with RunFolder(path) as folder:  # the lock: not while a run trains or explains there
        run = load_finished_run(folder, device)
    if precision == "run":
        precision = run.config.get("training", {}).get("precision", "auto")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected run or one of {', '.join(PRECISIONS)}")
    return TrainedModel(run.model, list(run.classes), run.test.tta,
                        resolve_precision(precision, device), device, run.run_id, str(path))


def as_batch(images, device: torch.device) -> torch.Tensor:
    """PIL images (any size and mode: see images.prepare) or a uint8 (N, 3, 32, 32) tensor ->
    uint8 (N, 3, 32, 32) on `device`."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (
                3, SIZE, SIZE):
            raise ValueError(f"expected a uint8 (N, 3, {SIZE}, {SIZE}) tensor, got "
                             f"{images.dtype} {tuple(images.shape)}")
        return images.to(device)
    images = list(images)
    if not all(isinstance(im, Image.Image) for im in images):
        raise TypeError("expected PIL images or a uint8 (N, 3, 32, 32) tensor")
    if not images:
        return torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8, device=device)
    views = np.stack([prepare(im).view for im in images])
    return torch.from_numpy(views).permute(0, 3, 1, 2).contiguous().to(device)


def predict_images(model: TrainedModel, images, top: int = 3, method: str | None = "gradcam",
                   batch_size: int = 256, layer: str = "layer3") -> list[Prediction]:
    """Each image's top-`top` classes (probabilities with the run's test-time augmentation, as
    its evaluation computed them) and the `method` map (any CAM method) of the predicted class."""
    if not 1 <= top <= len(model.classes):
        raise ValueError(f"top must be 1..{len(model.classes)}, not {top}")
    x = as_batch(images, model.device)
    if not len(x):
        return []
    probs = predict(model.module, x, batch_size=batch_size, precision=model.precision,
                    tta=model.tta).softmax(1)
    if not torch.isfinite(probs).all():
        raise UserError(f"{model.run_dir}: the model gives NaN or inf probabilities")
    p, k = probs.topk(top, 1)
    maps = empty = None
    if method:
        r = cams(model.module, to_float(x), k[:, 0],
                 CamSettings(check_methods([method]), layer, batch_size, model.precision))[method]
        maps, empty = r.maps.float().cpu().numpy(), r.empty.cpu().numpy()
    p, k = p.cpu().tolist(), k.cpu().tolist()
    names = model.classes
    return [Prediction(names[k[i][0]], p[i][0], [(names[c], q) for c, q in zip(k[i], p[i])],
                       None if maps is None else maps[i], bool(empty[i]) if method else False)
            for i in range(len(x))]
