"""The images a comparison shows: those one side fixed or broke, with each side's p(true) and
p(pred) (its models rerun on them with their own test-time augmentation, averaged over a
group's seeds), sorted by how far p(true) moved, and Grad-CAM overlays of each side's guess
where every run was explained; drawn as one sprite sheet."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.augment import to_float
from ..data.betons import beton_path
from ..data.loaders import load_all
from ..errors import UserError
from ..explain.cams import grad_cam
from ..pages import overlay
from ..run_folder import CHECKPOINT
from ..finished.checkpoint import load_checkpoint
from ..finished.evaluate import predict
from .runs import RunRecord


@dataclass
class Tiles:
    """The shown images, in display order, with both sides' figures."""
    index: np.ndarray  # (n,) test index
    true: np.ndarray  # (n,)
    kind: list[str]  # "fixed" or "broke"
    probs: np.ndarray  # (2, n, classes): side A, side B, averaged over each side's runs
    sheet: np.ndarray  # (n * 32, 32 or 96, 3) uint8: image | A's map | B's map
    maps: bool  # whether the sheet holds overlays

    def rows(self, classes: list[str]) -> list[dict]:
        """One JSON object per tile for the page."""
        out = []
        for k in range(len(self.index)):
            pa, pb = self.probs[0, k], self.probs[1, k]
            t = int(self.true[k])
            out.append({"index": int(self.index[k]), "kind": self.kind[k], "true": t,
                        "a_pred": int(pa.argmax()), "b_pred": int(pb.argmax()),
                        "a_p_true": round(float(pa[t]), 4), "b_p_true": round(float(pb[t]), 4),
                        "a_p_pred": round(float(pa.max()), 4),
                        "b_p_pred": round(float(pb.max()), 4), "row": k})
        return out


def _side_probs(runs: list[RunRecord], images: torch.Tensor,
                device: torch.device) -> tuple[np.ndarray, torch.nn.Module]:
    """Mean softmax over a side's runs, each model with its own TTA; the first run's model."""
    probs, first = [], None
    for r in runs:
        model, blob = load_checkpoint(r.path / CHECKPOINT, device)
        if blob.get("run_id") != r.run_id:
            raise UserError(f"{r.path}: files of different runs ({CHECKPOINT} is run "
                            f"{blob.get('run_id')}, metrics.json {r.run_id})")
        first = model if first is None else first
        logits = predict(model, images, batch_size=500, tta=r.test.tta)
        if not torch.isfinite(logits).all():
            raise UserError(f"{r.path / CHECKPOINT}: the model gives NaN or inf logits")
        probs.append(logits.softmax(1).cpu().numpy())
    return np.mean(probs, axis=0), first


def empty_tiles(classes: int) -> Tiles:
    """No tile at all."""
    return Tiles(np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros((2, 0, classes)),
                 np.zeros((0, 32, 3), np.uint8), False)


def build_tiles(c: dict, a: list[RunRecord], b: list[RunRecord], data_dir: Path,
                device: torch.device, limit: int) -> Tiles:
    """The fixed and broken images (at most `limit` of each, those whose p(true) moved most);
    the test beton in `data_dir` already checked against the runs."""
    chosen = [(i, "fixed") for i in c["fixed"]] + [(i, "broke") for i in c["broke"]]
    if not chosen:
        return empty_tiles(len(a[0].classes))
    indices = [i for i, _ in chosen]
    images, labels = load_all(beton_path(data_dir, "test"), device, indices=sorted(indices))
    pos = {i: n for n, i in enumerate(sorted(indices))}
    order = [pos[i] for i in indices]
    images, labels = images[order], labels[order]
    pa, model_a = _side_probs(a, images, device)
    pb, model_b = _side_probs(b, images, device)
    t = labels.cpu().numpy()
    moved = np.abs(pb[np.arange(len(t)), t] - pa[np.arange(len(t)), t])
    keep = []
    for kind in ("fixed", "broke"):  # each kind by how far p(true) moved, at most `limit`
        ks = [n for n, (_, kk) in enumerate(chosen) if kk == kind]
        keep += sorted(ks, key=lambda n: -moved[n])[:limit]
    keep = np.array(keep, dtype=np.int64)
    images, t, pa, pb = images[keep], t[keep], pa[keep], pb[keep]
    x = to_float(images)
    panels = [x.permute(0, 2, 3, 1).cpu().numpy()]
    layers = {r.explained_layer for r in (*a, *b)}
    maps = None not in layers and len(layers) == 1 and len(keep) > 0
    if maps:
        layer = layers.pop()
        u8 = images.permute(0, 2, 3, 1).cpu().numpy()
        for model, p in ((model_a, pa), (model_b, pb)):
            cam = grad_cam(model, x, torch.as_tensor(p.argmax(1), device=device), layer)
            panels.append(overlay(u8, cam.maps.cpu().numpy()))
    sheet = np.concatenate(panels, axis=2).clip(0, 1)  # (n, 32, 32 * panels, 3)
    sheet = (sheet.reshape(-1, sheet.shape[2], 3) * 255).round().astype(np.uint8)
    return Tiles(np.asarray([indices[n] for n in keep]), t, [chosen[n][1] for n in keep],
                 np.stack([pa, pb]), sheet, maps)
