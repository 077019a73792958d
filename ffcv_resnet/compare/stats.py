"""Paired statistics of two runs, and of two groups of runs, on the same test images: the 2x2
table, McNemar's exact test, bootstrap intervals and Welch's t-test, from scipy.stats (a
well-kept library, so that no hand-written test can be subtly wrong)."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

RESAMPLES = 9999


def two_by_two(a: np.ndarray, b: np.ndarray) -> dict:
    """Counts of test images both runs got right, only A, only B, neither: a, b (N,) bool."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return {"both_right": int((a & b).sum()), "only_a_right": int((a & ~b).sum()),
            "only_b_right": int((~a & b).sum()), "both_wrong": int((~a & ~b).sum())}


def mcnemar_p(fixed: int, broke: int) -> float:
    """McNemar's exact two-sided p-value: a binomial test of `fixed` among the discordant
    images (fixed + broke) against one half. 1.0 when no image is discordant."""
    n = fixed + broke
    return 1.0 if n == 0 else float(stats.binomtest(fixed, n, 0.5).pvalue)


def bootstrap_ci(values: np.ndarray, seed: int, resamples: int = RESAMPLES) -> list[float]:
    """95% percentile-bootstrap interval of the mean of `values` (seeded). For a paired
    difference, `values` are the per-image differences B - A (each -1, 0 or 1)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or np.all(v == v[0]):  # no spread: the interval is the point
        m = float(v.mean()) if len(v) else 0.0
        return [m, m]
    res = stats.bootstrap((v,), np.mean, n_resamples=resamples, confidence_level=0.95,
                          method="percentile", vectorized=True, batch=500,
                          random_state=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def group_ci(a: np.ndarray, b: np.ndarray, seed: int,
             resamples: int = RESAMPLES) -> list[float] | None:
    """95% percentile-bootstrap interval of mean(b) - mean(a), resampling the seeds of each
    group independently; None with fewer than two seeds a side."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    res = stats.bootstrap((a, b), lambda x, y, axis: y.mean(axis) - x.mean(axis),
                          n_resamples=resamples, confidence_level=0.95, method="percentile",
                          vectorized=True, random_state=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def welch(a: np.ndarray, b: np.ndarray) -> dict | None:
    """Welch's t-test of mean(b) vs mean(a) (unequal variances): t, two-sided p, degrees of
    freedom; None with fewer than two seeds a side or no spread at all."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2 or (a.var() == 0 and b.var() == 0):
        return None
    with warnings.catch_warnings():  # one side without spread: scipy warns, the test holds
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_ind(b, a, equal_var=False)
    return {"t": float(r.statistic), "p": float(r.pvalue), "df": float(r.df)}


def p_text(p: float) -> str:
    """A p-value as every table and summary line prints it (3 significant digits)."""
    return f"{p:.3g}"


def verdict(difference: float, ci: list[float] | None, label: str = "B") -> str:
    """'B is better' / 'A is better' when the interval excludes 0, else 'no difference shown'."""
    if ci is None:
        return "no interval (too few seeds): no difference shown"
    if ci[0] > 0:
        return f"{label} is better"
    if ci[1] < 0:
        return "A is better"
    return "no difference shown (the interval spans 0)"
