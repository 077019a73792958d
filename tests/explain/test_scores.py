"""The faithfulness table: a method is named best only when paired intervals say so."""
from __future__ import annotations

import numpy as np


def _explained_with_scores(scores: dict[str, np.ndarray], methods: tuple[str, ...]):
    from ffcv_resnet.explain.gallery import Explained
    n = next(iter(scores.values())).shape[-1]
    i = np.arange(n)
    return Explained(i, i % 10, (i + 1) % 10, np.full(n, .6), np.full(n, .2),
                     np.zeros((n, 32, 32, 3), np.uint8), methods,
                     np.zeros((len(methods), 2, n, 32, 32)),
                     np.zeros((len(methods), 2, n), bool), scores)


def test_no_method_is_named_most_faithful_when_the_intervals_overlap():
    """The report's example: gradcam 0.050 [0.032, 0.068] and xgradcam 0.050 [0.032, 0.067] on
    two errors name no winner; one method ahead on every error of 40 by every score is named."""
    from ffcv_resnet.data.cifar import CLASSES
    from ffcv_resnet.explain.scores import summarise
    methods = ("gradcam", "xgradcam")
    close = np.array([[[0.049, 0.051]] * 2, [[0.0495, 0.0505]] * 2])  # (M, 2, N=2)
    t = summarise(_explained_with_scores({"road_combined": close}, methods), list(CLASSES))
    assert t["most_faithful"] is None and t["best"]["road_combined"] is None
    assert t["verdict"] == "no method is clearly more faithful than the others on 2 scored errors"
    g = np.random.default_rng(0)
    base = g.normal(0.05, 0.02, 40)
    ahead = {"road_combined": np.stack([np.stack([base + 0.03] * 2), np.stack([base] * 2)]),
             "deletion": np.stack([np.stack([base] * 2), np.stack([base + 0.03] * 2)])}
    t = summarise(_explained_with_scores(ahead, methods), list(CLASSES))
    assert t["best"] == {"road_combined": "gradcam", "deletion": "gradcam"}  # lower is better
    assert t["most_faithful"] == "gradcam" and t["verdict"].startswith("gradcam is clearly")
    split = {**ahead, "insertion": ahead["deletion"]}  # insertion: higher is better: xgradcam
    t = summarise(_explained_with_scores(split, methods), list(CLASSES))
    assert t["most_faithful"] is None and t["best"]["insertion"] == "xgradcam"
    assert "each score's clear best, if any, is named beside it" in t["verdict"]
