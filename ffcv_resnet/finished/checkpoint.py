"""model.pt: a finished run's eager weights and what explain, compare and predict check them
against (its run id, classes and test set). Checkpoints are written to a temporary name and
renamed, and load with `torch.load(weights_only=True)`; anything that is not ours is one line."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_path
from ..model import resnet18
from ..model_options import ARCH
from ..records import TestSet


def save_blob(blob: dict, path: Path) -> None:
    """A checkpoint dict, written whole or not at all."""
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_blob(path: Path, what: str, hint: str) -> dict:
    """A checkpoint dict of this architecture (on the CPU); UserError naming `path` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no {what} ({hint})")
    try:
        with warnings.catch_warnings():  # torch warns before refusing a foreign pickle
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: unreadable {what}, truncated or corrupt "
                        f"({str(e).splitlines()[0][:120]})") from None
    if not isinstance(blob, dict) or blob.get("arch") != ARCH:
        found = blob.get("arch") if isinstance(blob, dict) else type(blob).__name__
        raise UserError(f"{path}: {what} of another architecture ({found!r}, expected {ARCH})")
    return blob


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_model(path: Path, model: nn.Module, run_id: str, test: TestSet,
               classes: list[str]) -> None:
    """The eager model's weights plus what explain needs to check it against the test beton."""
    save_blob({"arch": ARCH, "run_id": run_id, "num_classes": len(classes),
               "classes": list(classes), "state_dict": cpu_state(model),
               "test": test.__dict__}, path)


def _model_from(blob: dict, path: Path) -> nn.Module:
    model = resnet18(blob["num_classes"])
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: weights do not fit {ARCH} ({str(e).splitlines()[0]})") from None
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path}: NaN or inf weights ({bad[0]}, ...): a damaged or diverged "
                        "model")
    return model


def load_checkpoint(path: Path, device: torch.device = torch.device("cpu")):
    """(eager model in eval mode, checkpoint dict); UserError for anything that is not ours."""
    blob = load_blob(path, "checkpoint",
                     f"train first: scripts/train.py --run.dir {Path(path).parent}")
    return _model_from(blob, Path(path)).to(device).eval(), blob
