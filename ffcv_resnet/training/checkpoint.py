"""Checkpoints: model.pt (the finished run's eager weights) and last.pt (everything to resume).

Both are written to a temporary name and renamed, and load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_path
from ..model import ARCH, resnet18
from ..records import TestSet


def _save(blob: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load(path: Path, what: str, hint: str) -> dict:
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
    _save({"arch": ARCH, "run_id": run_id, "num_classes": len(classes), "classes": list(classes),
           "state_dict": cpu_state(model), "test": test.__dict__}, path)


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
    blob = _load(path, "checkpoint", f"train first: scripts/train.py --run.dir {Path(path).parent}")
    return _model_from(blob, Path(path)).to(device).eval(), blob


def save_state(path: Path, *, run_id: str, epoch: int, model: nn.Module, step,
               augment: list[dict], batches, history: list[dict], progress: dict[str, Any],
               config: dict) -> None:
    """last.pt: weights, optimiser, schedule, scaler, augmentation (each process's, in rank
    order) and data-order RNG state, the history so far, the time spent and the recipe, after
    `epoch` complete epochs. Under torchrun the weights, optimiser and data order are the same
    in every process, so rank 0's stand for all."""
    _save({"arch": ARCH, "run_id": run_id, "epoch": epoch, "num_classes": model.fc.out_features,
           "config": config,
           "state_dict": cpu_state(model), "step": step.state_dict(),
           "augment": augment, "batches": batches.state_dict(),
           "history": history, "progress": progress}, path)


def load_state(path: Path) -> dict:
    """last.pt as saved (on the CPU); UserError when missing, damaged or not ours."""
    blob = _load(path, "resume checkpoint", "nothing to resume")
    missing = {"run_id", "epoch", "state_dict", "step", "augment", "batches", "history",
               "progress", "config"} - set(blob)
    if missing:
        raise UserError(f"{path}: incomplete resume checkpoint (no {sorted(missing)[0]})")
    if not isinstance(blob["augment"], list):
        raise UserError(f"{path}: a resume checkpoint of an older version of this project; "
                        "start the run again (--run.overwrite true)")
    return blob


def restore(blob: dict, model: nn.Module, step, augment, batches, rank: int = 0) -> None:
    """Put every saved state back into the live objects (model already on its device); the
    augmentation generator is process `rank`'s."""
    model.load_state_dict(blob["state_dict"])
    step.load_state_dict(blob["step"])
    augment.load_state_dict(blob["augment"][rank])
    batches.load_state_dict(blob["batches"])
