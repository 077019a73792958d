"""scripts/predict.py: a finished run classifies and explains your images, into one folder:
predictions.json, predictions.csv, overlays/ and predictions.html, written whole or not at all.

Every input that cannot be used is one line on stderr and listed in predictions.json's `failed`;
the others are still predicted (exit 1 when any failed). Nothing usable, or an unusable run, is
exit 2 with nothing written."""
from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..errors import UserError, say
from ..pages import overlay
from ..io import atomic_path
from ..png import array_png_bytes
from ..records import dumps
from ..run_folder import check_output_folder
from ..timing import Stopwatch
from .images import Decoded, Failed, decode_all, find_inputs
from .model import Prediction, load_model, predict_images
from .options import PredictSettings
from .page import render_page

PRINTED = 20  # images whose top class the console lists (every one is in the files)
JSON, CSV, HTML, OVERLAYS = "predictions.json", "predictions.csv", "predictions.html", "overlays"
OVERLAY_SCALE = 4  # an overlay PNG is the 32x32 view, each pixel 4x4


class SomeFailed(UserError):
    """Some inputs could not be used (each listed); the others were predicted: exit 1."""

    exit_code = 1


def check_out(out: Path) -> None:
    """`out` may be written: new, empty, or an earlier prediction's folder; never a file or
    (inside) a run folder."""
    if out.is_symlink():
        raise UserError(f"--predict.out {out}: a symbolic link; give the folder it points to "
                        f"({out.resolve()}) or another one")
    check_output_folder(out, "predict.out")
    if out.is_dir() and any(out.iterdir()) and not (out / JSON).is_file():
        raise UserError(f"--predict.out {out}: holds files that are not a prediction's; choose a "
                        "new or empty folder")


def overlay_name(k: int, path: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(path).stem)[:60]
    return f"{OVERLAYS}/{k:05d}-{stem or 'image'}.png"


def overlay_png(view: np.ndarray, cam: np.ndarray | None) -> bytes:
    """The 32x32 view with the map blended on, each pixel OVERLAY_SCALE wide."""
    rgb = view / 255 if cam is None else overlay(view, cam).clip(0, 1)
    rgb = (rgb * 255).round().astype(np.uint8)
    return array_png_bytes(rgb.repeat(OVERLAY_SCALE, 0).repeat(OVERLAY_SCALE, 1))


def rows(decoded: list[Decoded], preds: list[Prediction], method: str | None) -> list[dict]:
    return [{"path": d.path, "predicted": p.predicted, "probability": round(p.probability, 6),
             "top": [[c, round(q, 6)] for c, q in p.top], "size": list(d.size), "mode": d.mode,
             "overlay": overlay_name(k, d.path) if method else None,
             "cam_empty": p.cam_empty if method else None}
            for k, (d, p) in enumerate(zip(decoded, preds))]


def csv_text(rows_: list[dict], top: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "predicted", "probability", *(f"{x}_{i}" for i in range(1, top + 1)
                                                      for x in ("class", "p")), "overlay"])
    for r in rows_:
        w.writerow([r["path"], r["predicted"], f"{r['probability']:.6f}",
                    *(v for c, q in r["top"] for v in (c, f"{q:.6f}")), r["overlay"] or ""])
    return buf.getvalue()


def predict_run(cfg: PredictSettings) -> dict:
    """Check the run and the output folder, find and decode the inputs, predict them in
    batches, then write the folder whole. Returns predictions.json's content."""
    pc = cfg.predict
    out = Path(pc.out)
    check_out(out)
    model = load_model(cfg.run.dir, pc.device, pc.precision)  # before decoding anything
    method = None if pc.method == "none" else pc.method
    if method:
        from ..explain.activations import check_layer
        check_layer(model.module, pc.layer)
    if pc.top > len(model.classes):
        raise ConfigError(f"bad value {pc.top} for --predict.top (the run has "
                          f"{len(model.classes)} classes)")
    start = time.perf_counter()
    paths, failed = find_inputs(list(pc.inputs))
    results = decode_all(paths, pc.threads)
    decode_seconds = time.perf_counter() - start
    decoded = [r for r in results if isinstance(r, Decoded)]
    failed += [r for r in results if isinstance(r, Failed)]
    for f in failed:
        say(f"failed: {f.path}: {f.error}", file=sys.stderr)
    if not decoded:
        raise UserError(f"nothing to predict: {len(failed)} input(s) could not be used")
    batch = torch.from_numpy(np.stack([d.view for d in decoded])).permute(0, 3, 1, 2)
    with Stopwatch(model.device) as t:
        preds = predict_images(model, batch.contiguous(), pc.top, method, pc.batch_size,
                               pc.layer)
    record = {"run_id": model.run_id, "run_dir": str(cfg.run.dir), "method": method,
              "tta": model.tta, "precision": model.precision, "device": str(model.device),
              "top": pc.top, "count": len(decoded), "decode_seconds": round(decode_seconds, 4),
              "predict_seconds": round(t.seconds, 4),
              "images_per_second": round(len(decoded) / max(t.seconds, 1e-9), 1),
              "predictions": rows(decoded, preds, method),
              "failed": [{"path": f.path, "error": f.error} for f in failed]}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        if method:
            (tmp / OVERLAYS).mkdir()
        overlays = []
        for k, (d, p) in enumerate(zip(decoded, preds)):
            png = overlay_png(d.view, p.cam)
            overlays.append(png)
            if method:
                (tmp / overlay_name(k, d.path)).write_bytes(png)
        (tmp / CSV).write_text(csv_text(record["predictions"], pc.top))
        (tmp / HTML).write_text(render_page(record, decoded, overlays))
        (tmp / JSON).write_text(dumps(record) + "\n")  # last: it marks a finished folder
    shown = PRINTED if len(preds) > PRINTED + 1 else len(preds)
    for r in record["predictions"][:shown]:
        say(f"{r['path']}: {r['predicted']} {r['probability']:.2f}")
    if shown < len(preds):
        say(f"... and {len(preds) - shown} more (every one in {out / CSV})")
    say(f"predicted {len(decoded)} image(s) in {t.seconds:.2f} s ({record['images_per_second']:.0f}"
        f" images/s on {model.device}; decoding {decode_seconds:.2f} s) with run {model.run_id}: "
        f"{out / HTML}")
    if failed:
        raise SomeFailed(f"{len(failed)} of {len(failed) + len(decoded)} input(s) could not be "
                         f"used (listed in {out / JSON}); the others were predicted")
    return record
