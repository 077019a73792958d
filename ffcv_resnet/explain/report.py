"""report.html, the page where a person studies a run's mistakes: the run's summary, curves and
confusion matrix (a click lists that cell's errors), and every error with its image and both
Grad-CAM overlays, sortable and filterable. It works from disk (file://, no network): the data
is JSON inside the page, the tiles come from the gallery's sprite sheets beside it, and a little
vanilla JS (in report_page.html, the template) does the rest."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes
from ..run_folder import GALLERY, REPORT
from ..pages import fill_page
from .gallery import SPRITE_ROWS, Explained, page_name, sprite_name
from .labels import LabelEvidence

TEMPLATE = Path(__file__).with_name("report_page.html")


@dataclass
class ReportContext:
    """What the report shows besides the errors: the run's record and how explain ran."""
    run_id: str
    classes: list[str]
    confusion: np.ndarray  # (K, K) int, rows true, columns predicted
    metrics: dict  # metrics.json
    history: list[dict]  # history.jsonl
    config: dict  # config.yaml without the run id
    explain: dict  # how explain ran: methods, metrics, settings, timings, the faithfulness table
    page_size: int  # errors per gallery page
    links: list[str]  # the run folder's other files to link, e.g. manifest.csv
    labels: LabelEvidence | None = None  # what is known of each error's label


def _score(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 5)


def error_rows(e: Explained, page_size: int, labels: LabelEvidence | None = None) -> list[dict]:
    """One JSON object per error, in the gallery's order, with its sprite sheet, row and page,
    each method's flat-map flags [pred, true], scores {metric: [pred, true]} and what is known
    of its label."""
    labels = labels or LabelEvidence({}, {})
    return [{"index": int(e.index[i]), "label": labels.row(int(e.index[i]), int(e.true[i])), "true": int(e.true[i]), "predicted": int(e.predicted[i]),
             "p_pred": round(float(e.p_pred[i]), 6), "p_true": round(float(e.p_true[i]), 6),
             "flat": {method: [bool(e.empty[m, 0, i]), bool(e.empty[m, 1, i])]
                      for m, method in enumerate(e.methods)},
             "scores": {method: {metric: [_score(v[m, 0, i]), _score(v[m, 1, i])]
                                 for metric, v in e.scores.items()}
                        for m, method in enumerate(e.methods)},
             "sheet": i // SPRITE_ROWS, "row": i % SPRITE_ROWS, "page": i // page_size}
            for i in range(len(e.index))]


def report_data(e: Explained, ctx: ReportContext) -> dict:
    """Everything the page's script reads, as plain JSON-able values."""
    n = len(e.index)
    pages = [f"{GALLERY}/{page_name(p)}" for p in range(-(-n // ctx.page_size))]
    explain = {**ctx.explain, "flat": e.flat_counts()}
    return {"run_id": ctx.run_id, "classes": list(ctx.classes),
            "confusion": np.asarray(ctx.confusion).tolist(), "metrics": ctx.metrics,
            "history": ctx.history, "config": ctx.config, "explain": explain,
            "methods": list(e.methods), "errors": error_rows(e, ctx.page_size, ctx.labels),
            "labels": ctx.labels.summary if ctx.labels else {}, "pages": pages,
            "sprites": {m: [f"{GALLERY}/{sprite_name(k, m)}" for k in range(-(-n // SPRITE_ROWS))]
                        for m in e.methods},
            "links": pages + ctx.links}


def render_report(data: dict) -> str:
    """The page: the template with the run id and the data."""
    return fill_page(TEMPLATE, data, run_id=data["run_id"])


def write_report(run_dir: Path, e: Explained, ctx: ReportContext) -> Path:
    """report.html in the run folder, written atomically; returns its path."""
    path = Path(run_dir) / REPORT
    atomic_write_bytes(path, render_report(report_data(e, ctx)).encode())
    return path
