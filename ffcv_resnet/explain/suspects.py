"""The suspect training labels: the training images whose label the run's own dynamics doubt
most (the lowest area under the margin, train_dynamics.npz), each with the class the finished
model puts first (the run's test-time augmentation), p(given label), its AUM, forgetting events
and epochs right, and the Grad-CAM map of the given and of the model's class; written as
suspect_labels.html (one self-contained page) and suspect_labels.csv (every training image's
figures, for whoever relabels)."""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.augment import to_float
from ..data.betons import beton_path
from ..data.loaders import load_all
from ..finished.evaluate import predict
from ..io import atomic_write_bytes
from ..pages import data_uri, fill_page, overlay
from ..png import array_png_bytes
from ..run_folder import DYNAMICS
from .analysis import PassConfig, map_pass

TEMPLATE = Path(__file__).with_name("suspects_page.html")
COLUMNS = ("index", "label", "aum", "right_epochs", "forgetting_events", "p_mean", "p_std",
           "seen_epochs")


@dataclass(frozen=True)
class TrainDynamics:
    """train_dynamics.npz, read: every training image's figures (by beton index; AUM and the
    p(label) figures are NaN for an image never trained on, as with --data.train_subset)."""
    index: np.ndarray
    label: np.ndarray
    aum: np.ndarray
    right_epochs: np.ndarray
    forgetting_events: np.ndarray
    p_mean: np.ndarray
    p_std: np.ndarray
    seen_epochs: np.ndarray
    epochs: int

    @property
    def seen(self) -> int:
        """How many training images the run trained on."""
        return int(np.isfinite(self.aum).sum())


def read_dynamics(run_dir: Path, run_id: str, images: int) -> tuple[TrainDynamics | None, str]:
    """The run's train_dynamics.npz, or None and the one line saying why."""
    path = Path(run_dir) / DYNAMICS
    if not path.is_file():
        return None, (f"no suspect-labels page: {path.name} is missing (a run made before "
                      "runs recorded their dynamics, or with --training.dynamics false)")
    try:
        with np.load(path, allow_pickle=False) as f:
            ok = str(f["run_id"]) == run_id and all(len(f[k]) == images for k in COLUMNS)
            d = (TrainDynamics(**{k: f[k] for k in COLUMNS}, epochs=int(f["epochs"]))
                 if ok else None)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        return None, f"no suspect-labels page: {path} is unreadable ({str(e)[:100]})"
    if d is None:
        return None, (f"no suspect-labels page: {path} is another run's, or not of the "
                      f"{images} training images")
    return d, f"suspect labels: the lowest AUM of the {d.seen} training images the run saw"


@dataclass
class Suspects:
    """The training images shown, lowest AUM first."""
    index: np.ndarray  # (k,) in the training beton
    given: np.ndarray  # (k,) the label it was trained with
    top: np.ndarray  # (k,) the finished model's first class
    p_given: np.ndarray  # (k,)
    p_top: np.ndarray  # (k,)
    sheet: np.ndarray  # (k * 32, 96, 3) uint8: image | map of the model's class | of the given


def suspects(model: nn.Module, data_dir: Path, dyn: TrainDynamics, k: int, cfg: PassConfig) -> Suspects:
    """The k training images of lowest AUM, predicted and mapped by the finished model."""
    device = next(model.parameters()).device
    order = np.argsort(dyn.aum, kind="stable")
    order = order[np.isfinite(dyn.aum[order])][:k]
    idx = np.sort(order)  # the loader reads in beton order
    images, labels = load_all(beton_path(data_dir, "train"), device, indices=idx)
    pos = {int(i): n for n, i in enumerate(idx)}
    take = torch.as_tensor([pos[int(i)] for i in order], device=device, dtype=torch.long)
    images, given = images[take], labels[take]
    probs = predict(model, images, batch_size=cfg.batch_size, precision=cfg.precision,
                    tta=cfg.tta).softmax(1)
    top = probs.argmax(1)
    p = map_pass(model, to_float(images), torch.stack([top, given]),
                 PassConfig(("gradcam",), (), cfg.layer, cfg.batch_size, cfg.precision, cfg.tta))
    u8 = images.permute(0, 2, 3, 1).cpu().numpy()
    maps = p.maps[0].cpu().numpy()  # (2, k, 32, 32): the model's class, the given one
    panels = np.concatenate([u8 / 255, overlay(u8, maps[0]), overlay(u8, maps[1])], axis=2)
    sheet = (panels.clip(0, 1).reshape(-1, 96, 3) * 255).round().astype(np.uint8)
    rows = torch.arange(len(order), device=device)
    return Suspects(order, given.cpu().numpy(), top.cpu().numpy(),
                    probs[rows, given].cpu().numpy(), probs[rows, top].cpu().numpy(), sheet)


def suspects_csv(dyn: TrainDynamics) -> str:
    """Every training image's figures, lowest AUM first (never-seen images last)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    def cell(column: str, i: int):
        v = getattr(dyn, column)[i]
        if column in ("aum", "p_mean", "p_std"):
            return f"{v:.6f}" if np.isfinite(v) else ""  # blank: never seen
        return int(v)
    aum = np.where(np.isfinite(dyn.aum), dyn.aum, np.inf)
    for i in np.argsort(aum, kind="stable"):
        w.writerow([cell(c, i) for c in COLUMNS])
    return buf.getvalue()


def write_suspects(folder: Path, s: Suspects, dyn: TrainDynamics, classes: list[str], run_id: str,
                   names: tuple[str, str]) -> None:
    """suspect_labels.html and suspect_labels.csv (`names`) into `folder`."""
    html_name, csv_name = names
    rows = [{"rank": r + 1, "index": int(i), "given": int(s.given[r]), "top": int(s.top[r]),
             "p_given": round(float(s.p_given[r]), 4), "p_top": round(float(s.p_top[r]), 4),
             "aum": round(float(dyn.aum[i]), 4),
             "forgetting": int(dyn.forgetting_events[i]),
             "right": int(dyn.right_epochs[i]), "seen": int(dyn.seen_epochs[i])}
            for r, i in enumerate(s.index)]
    data = {"run_id": run_id, "classes": list(classes), "rows": rows,
            "images": dyn.seen, "epochs": dyn.epochs, "csv": csv_name,
            "sheet": data_uri(array_png_bytes(s.sheet)) if len(rows) else ""}
    atomic_write_bytes(Path(folder) / csv_name, suspects_csv(dyn).encode())
    atomic_write_bytes(Path(folder) / html_name,
                       fill_page(TEMPLATE, data, run_id=run_id).encode())
