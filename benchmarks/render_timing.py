"""Rendering time of explain's outputs for a synthetic run with many errors (default 600): the
gallery pages and sprite sheets, manifest, summary and overview figures, and the report (what
`render_outputs` writes; not the screenshot). No model, no data set: the Grad-CAM maps are smooth
random fields, so only the rendering is timed.

    .venv/bin/python benchmarks/render_timing.py [errors] [repeats]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ffcv_resnet.data.cifar import CLASSES  # noqa: E402
from ffcv_resnet.explain.options import DEFAULT_METHODS, DEFAULT_METRICS  # noqa: E402
from ffcv_resnet.explain.gallery import Explained, confusion_from_errors  # noqa: E402
from ffcv_resnet.explain.scores import summarise  # noqa: E402
from ffcv_resnet.explain.render import render_outputs  # noqa: E402
from ffcv_resnet.explain.report import ReportContext  # noqa: E402

RUN_ID = "20261124-000000-abcdef"


def synthetic(n: int, seed: int = 0, methods: tuple[str, ...] = DEFAULT_METHODS,
              metrics: tuple[str, ...] = DEFAULT_METRICS) -> Explained:
    """`n` errors, most confident first, with random images and smooth maps of every method (a
    few flat), and random scores."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    true = rng.integers(0, 10, n)
    m = len(methods)
    cams = F.interpolate(torch.rand(m * 2 * n, 1, 8, 8), size=(32, 32), mode="bilinear")[:, 0]
    lo, hi = cams.amin((1, 2), keepdim=True), cams.amax((1, 2), keepdim=True)
    maps = ((cams - lo) / (hi - lo)).numpy().reshape(m, 2, n, 32, 32)
    empty = rng.random((m, 2, n)) < 0.04
    maps[empty] = 0
    scores = {k: np.where(empty, np.nan, rng.normal(0, 0.2, (m, 2, n))) for k in metrics}
    return Explained(np.arange(n) * 7, true, (true + rng.integers(1, 10, n)) % 10,
                     np.sort(rng.uniform(0.2, 1, n))[::-1], rng.uniform(0, 0.2, n),
                     rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), tuple(methods), maps,
                     empty, scores)


def settings(e: Explained, classes: list[str] = list(CLASSES)) -> dict:
    """What explain records of its pass, as the report reads it (timings made up: zero)."""
    return {"layer": "layer3", "precision": "fp32", "device": "cpu", "methods": list(e.methods),
            "metrics": list(e.scores), "errors": len(e.index), "scored": len(e.index),
            "noise": 0.01, "steps": 16, "seed": 0, "cams_seconds": 0.0, "scores_seconds": 0.0,
            "explain_seconds": 0.0, "faithfulness": summarise(e, classes)}


def render(e: Explained, run_dir: Path) -> None:
    """What explain renders after Grad-CAM (`render_outputs`), the overview included."""
    rng = np.random.default_rng(1)
    overview = (rng.integers(0, 256, (600, 32, 32, 3), dtype=np.uint8),
                np.repeat(np.arange(10), 60))
    metrics = {"test_accuracy": 1 - len(e.index) / 10_000, "test_images": 10_000,
               "per_class_accuracy": {c: 0.9 for c in CLASSES}}
    ctx = ReportContext(RUN_ID, list(CLASSES), confusion_from_errors(e, [1000] * 10), metrics,
                        [], {}, settings(e), 24, ["curves.png", "summary.png"])
    render_outputs(e, ctx, run_dir, overview, progress=False)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    e = synthetic(n)
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            render(e, Path(tmp))
            seconds.append(time.perf_counter() - start)
    print(f"rendering {n} errors: median {sorted(seconds)[len(seconds) // 2]:.2f} s "
          f"(all: {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
