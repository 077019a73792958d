"""The faithfulness table of an explain pass: each method's mean score with its 95% confidence
interval (Student's t, from scipy.stats), over the scored errors and per true class, for the
maps of the predicted and of the true class; a method named best only when paired intervals
show it beats every other on the same errors."""
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


def clearly_best(scores: np.ndarray, methods: tuple[str, ...], higher: bool) -> str | None:
    """The method whose scores (M, N) beat every other method's on the same errors: for each
    other method, the t-interval of the paired differences (Bonferroni over the M - 1
    comparisons, 95% together) lies wholly on its side of zero. None when no method does (with
    few errors, or methods that score alike)."""
    means = {m: mean_ci(scores[k])["mean"] for k, m in enumerate(methods)}
    order = _rank_best(means, higher)
    if len(order) < 2:
        return order[0] if order and len(methods) == 1 else None
    top = methods.index(order[0])
    level = 1 - 0.05 / (len(methods) - 1)
    for k in range(len(methods)):
        if k == top:
            continue
        d = scores[top] - scores[k]
        d = d[np.isfinite(d)]
        if len(d) < 2:
            return None
        spread = stats.sem(d)
        if spread == 0:  # identical differences: no interval, the sign says it
            if (d[0] > 0) != higher or d[0] == 0:
                return None
            continue
        lo, hi = stats.t.interval(level, len(d) - 1, loc=float(d.mean()), scale=spread)
        if not (lo > 0 if higher else hi < 0):
            return None
    return order[0]


def summarise(e: Explained, classes: list[str]) -> dict:
    """Per metric and map (pred, true): each method's mean and interval, overall and per true
    class; per metric, the method clearly best on the predicted-class maps (`best`) and on the
    true-class ones (`best_true`) by paired intervals (None when none is); the most faithful
    method, named only when one method is clearly best by every score; and the verdict
    sentence the report and the console show. The methods' mean ranks are kept as a figure."""
    n = int(np.isfinite(np.stack(list(e.scores.values()))).any(axis=(0, 1, 2)).sum()) \
        if e.scores else 0
    out = {"metrics": {}, "best": {}, "best_true": {}, "most_faithful": None, "scored": n}
    ranks: dict[str, list[int]] = {m: [] for m in e.methods}
    for metric, scores in e.scores.items():
        higher = HIGHER_IS_BETTER[metric]
        entry = {"higher_is_better": higher}
        for k, which in enumerate(WHICH):
            entry[which] = {method: mean_ci(scores[m, k]) for m, method in enumerate(e.methods)}
            entry[f"{which}_per_class"] = {
                method: {name: mean_ci(scores[m, k][e.true == c]) for c, name in enumerate(classes)}
                for m, method in enumerate(e.methods)}
        out["best"][metric] = clearly_best(scores[:, 0], e.methods, higher)
        out["best_true"][metric] = clearly_best(scores[:, 1], e.methods, higher)
        order = _rank_best({m: v["mean"] for m, v in entry["pred"].items()}, higher)
        for r, method in enumerate(order):
            ranks[method].append(r)
        out["metrics"][metric] = entry
    ranked = {m: float(np.mean(r)) for m, r in ranks.items() if len(r) == len(e.scores) and r}
    if ranked:
        out["mean_rank"] = ranked
    winners = set(out["best"].values())
    if e.scores and len(winners) == 1 and None not in winners:
        out["most_faithful"] = winners.pop()
        out["verdict"] = (f"{out['most_faithful']} is clearly the most faithful method by every "
                          f"score ({', '.join(e.scores)}) on the {n} scored errors")
    else:
        out["verdict"] = (f"no method is clearly more faithful than the others on {n} scored "
                          "errors" + (" (each score's clear best, if any, is named beside it)"
                                      if any(out["best"].values()) else ""))
    return out
