"""The run folder: resolved config, per-epoch history, metrics, errors, and the eager checkpoint."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .config import option
from .errors import UserError, atomic_write_bytes
from .model import ARCH, resnet18

CONFIG, HISTORY, METRICS = "config.yaml", "history.jsonl", "metrics.json"
CHECKPOINT, ERRORS, CURVES = "model.pt", "errors.json", "curves.png"


@dataclass
class RunConfig:
    """Run: the run folder and what is printed"""
    dir: str = option("runs/main", "run folder: config, history, metrics, checkpoint, errors, "
                      "figures")
    summary: bool = option(False, "print the model's layer-by-layer summary")
    progress: str = option("auto", "progress bar within epochs (auto: on the CPU)",
                           ("auto", "on", "off"))


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=1) + "\n").encode())


def write_yaml(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), yaml.safe_dump(obj, sort_keys=False).encode())


def write_history(path: Path, rows: list[dict]) -> None:
    """All epochs so far, one JSON line each (rewritten whole, atomically, after every epoch)."""
    atomic_write_bytes(Path(path), "".join(json.dumps(r) + "\n" for r in rows).encode())


def read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no {what} (did training finish in this run folder?)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable {what} ({e})") from None


def save_checkpoint(path: Path, model: torch.nn.Module, test: dict, classes: list[str]) -> None:
    """The eager model's weights plus what explain needs to check it against the test beton."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"arch": ARCH, "num_classes": len(classes), "classes": list(classes),
            "state_dict": state, "test": test}
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    try:
        torch.save(blob, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, device: torch.device = torch.device("cpu")):
    """(eager model in eval mode, checkpoint dict); UserError for anything that is not ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint (train first: scripts/train.py --run.dir "
                        f"{path.parent})")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: unreadable checkpoint, truncated or corrupt "
                        f"({str(e).splitlines()[0][:120]})") from None
    if not isinstance(blob, dict) or blob.get("arch") != ARCH:
        found = blob.get("arch") if isinstance(blob, dict) else type(blob).__name__
        raise UserError(f"{path}: checkpoint of another architecture ({found!r}, expected {ARCH})")
    model = resnet18(blob["num_classes"])
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{path}: weights do not fit {ARCH} ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), blob
