"""The faithfulness table of an explain pass: each method's mean score with its 95% confidence
interval (Student's t, from scipy.stats), over the scored errors and per true class, for the
maps of the predicted and of the true class, and the method the scores call most faithful."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .faithfulness import HIGHER_IS_BETTER
from .gallery import WHICH, Explained


def mean_ci(values: np.ndarray) -> dict:
    """n, mean and its 95% t-interval of the finite values (None where there are too few)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0, "mean": None, "ci95": None}
    mean = float(v.mean())
    if len(v) < 2 or float(v.std()) == 0.0:
        return {"n": int(len(v)), "mean": mean, "ci95": None if len(v) < 2 else [mean, mean]}
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=mean, scale=stats.sem(v))
    return {"n": int(len(v)), "mean": mean, "ci95": [float(lo), float(hi)]}


def _rank_best(means: dict[str, float | None], higher: bool) -> list[str]:
    """Methods from the most to the least faithful by their mean (those without one last)."""
    known = [m for m, v in means.items() if v is not None and math.isfinite(v)]
    return sorted(known, key=lambda m: -means[m] if higher else means[m])


def summarise(e: Explained, classes: list[str]) -> dict:
    """Per metric and map (pred, true): each method's mean and interval, overall and per true
    class; the best method per metric (predicted-class maps); and the most faithful method:
    the best mean rank over the metrics."""
    out = {"metrics": {}, "best": {}, "most_faithful": None}
    ranks: dict[str, list[int]] = {m: [] for m in e.methods}
    for metric, scores in e.scores.items():
        entry = {"higher_is_better": HIGHER_IS_BETTER[metric]}
        for k, which in enumerate(WHICH):
            entry[which] = {method: mean_ci(scores[m, k]) for m, method in enumerate(e.methods)}
            entry[f"{which}_per_class"] = {
                method: {name: mean_ci(scores[m, k][e.true == c]) for c, name in enumerate(classes)}
                for m, method in enumerate(e.methods)}
        order = _rank_best({m: v["mean"] for m, v in entry["pred"].items()},
                           HIGHER_IS_BETTER[metric])
        out["best"][metric] = order[0] if order else None
        for r, method in enumerate(order):
            ranks[method].append(r)
        out["metrics"][metric] = entry
    ranked = {m: float(np.mean(r)) for m, r in ranks.items() if len(r) == len(e.scores) and r}
    if ranked:
        out["most_faithful"] = min(ranked, key=lambda m: (ranked[m], e.methods.index(m)))
        out["mean_rank"] = ranked
    return out
