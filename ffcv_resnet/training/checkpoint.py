"""last.pt: everything a killed run needs to resume (weights, optimiser, schedule, scaler,
augmentation and data-order states, history, time spent, recipe). model.pt, the finished run's
weights, is the finished floor's (finished/checkpoint.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UserError
from ..finished.checkpoint import cpu_state, load_blob, save_blob
from ..model_options import ARCH


@dataclass
class ResumePoint:
    """Where a run stands after `epoch` complete epochs, besides its live states."""
    run_id: str
    epoch: int
    history: list[dict]
    progress: dict[str, Any]  # the time spent (sessions), the data's fingerprint, processes
    config: dict  # the run's settings, as config.yaml holds them


def save_state(path: Path, point: ResumePoint, model: nn.Module, step, batches,
               augment: list[dict]) -> None:
    """last.pt: `point`, the weights, optimiser, schedule, scaler (and weight average), the
    data order's state and each process's augmentation generator (in rank order). Under
    torchrun the weights, optimiser and data order are the same in every process, so rank 0's
    stand for all."""
    save_blob({"arch": ARCH, "run_id": point.run_id, "epoch": point.epoch,
               "num_classes": model.fc.out_features, "config": point.config,
               "state_dict": cpu_state(model), "step": step.state_dict(),
               "augment": augment, "batches": batches.state_dict(),
               "history": point.history, "progress": point.progress}, path)


def load_state(path: Path) -> dict:
    """last.pt as saved (on the CPU); UserError when missing, damaged or not ours."""
    blob = load_blob(path, "resume checkpoint", "nothing to resume")
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
