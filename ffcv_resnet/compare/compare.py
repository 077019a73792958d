"""Did the change help? Two runs, or two groups of runs (the seeds of two recipes), compared on
the same test images: the paired statistics, the images each side fixed and broke with both
sides' probabilities, what differs between the runs, and a verdict that says when nothing is
shown beyond seed noise. Writes compare.json and compare.html."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError, option, require_range
from ..data.options import DataDir
from ..device import check_device, device_option
from ..errors import UserError
from ..run_folder import CHECKPOINT
from ..finished.settings import RESUMABLE
from .runs import RunRecord, read_sides
from .stats import bootstrap_ci, group_ci, mcnemar_p, p_text, two_by_two, verdict, welch

COMPARE_JSON, COMPARE_HTML = "compare.json", "compare.html"
TIMINGS = ("train_seconds", "compile_seconds", "startup_seconds", "images_per_second")


@dataclass(frozen=True)
class CompareConfig:
    """Compare: two runs, or two groups of runs, on the same test images"""
    runs: tuple = option((), "two run folders, A (the baseline) then B (the change); for groups "
                         "of runs, --compare.a and --compare.b", many=True, positional="RUN")
    a: tuple = option((), "run folder(s) of side A (the baseline): one run, or a group",
                      many=True)
    b: tuple = option((), "run folder(s) of side B (the change)", many=True)
    out: str = option("runs/compare", "folder for compare.json and compare.html")
    seed: int = option(0, "seed of the bootstrap resampling")
    tiles: int = option(200, "fixed and broken images shown as tiles on the page, each (the "
                        "ones whose p(true) moved most)")
    same_test_set: bool = option(False, "pair runs whose records cannot show that they share a "
                                 "test set (records made before runs named their test images "
                                 "by content name the source by its path and time): their "
                                 "counts, per-class counts and the true label of every error "
                                 "they list are checked against --data.dir's test beton instead")
    device: str = device_option()

    def validate(self, prefix: str) -> None:
        if self.runs and (self.a or self.b):
            raise ConfigError("give the runs either as two positionals (A B) or with "
                              f"--{prefix}.a and --{prefix}.b, not both")
        if self.runs and len(self.runs) != 2:
            raise ConfigError(f"{len(self.runs)} run folders given: two positionals are A and B "
                              f"(groups of runs go with --{prefix}.a and --{prefix}.b)")
        require_range(prefix, self, "seed", 0, 2**31 - 1)
        require_range(prefix, self, "tiles", 0, 10_000)
        check_device(prefix, self.device)

    def sides(self) -> tuple[list[str], list[str]]:
        """Side A's run folders and side B's, however they were given."""
        if self.runs:
            return [self.runs[0]], [self.runs[1]]
        return list(self.a), list(self.b)


@dataclass(frozen=True)
class CompareSettings:
    """scripts/compare.py's options."""
    data: DataDir
    compare: CompareConfig


def _points(x: float | None) -> float | None:
    return None if x is None else 100 * x


def paired(a: RunRecord, b: RunRecord, seed: int) -> dict:
    """One run against one run, image by image."""
    ca, cb = a.correct(), b.correct()
    idx = a.indices()
    d = cb.astype(np.int8) - ca.astype(np.int8)
    fixed, broke = idx[~ca & cb], idx[ca & ~cb]
    labels = _labels(a, b)
    per_class = {}
    for c, name in enumerate(a.classes):
        known = [k for k, i in enumerate(idx) if labels.get(int(i)) == c]
        rest = a.test.class_counts[c] - len(known)  # right in both: a difference of 0
        dc = np.concatenate([d[known], np.zeros(rest, np.int8)])
        acc = (lambda r: r.metrics.per_class_accuracy.get(name))
        per_class[name] = {"a": acc(a), "b": acc(b),
                           "difference": float(dc.mean()) if len(dc) else None,
                           "difference_ci95": bootstrap_ci(dc, seed) if len(dc) else None}
    diff = float(d.mean())
    ci = bootstrap_ci(d, seed)
    return {"mode": "runs", "table": two_by_two(ca, cb), "fixed": fixed.tolist(),
            "broke": broke.tolist(), "mcnemar_p": mcnemar_p(len(fixed), len(broke)),
            "difference": diff, "difference_ci95": ci, "per_class": per_class,
            "confusion_change": (_confusion(b) - _confusion(a)).tolist(),
            "label_suspect": {"fixed": _flagged(a, fixed), "broke": _flagged(b, broke)},
            "verdict": verdict(diff, ci)}


def _flagged(r: RunRecord, indices: np.ndarray) -> int | None:
    """How many of `indices`, errors of `r`, cleanlab flags as label-suspect in r's
    errors.json (None: a run that did not look)."""
    flags = {e.index: e.label_issue for e in r.errors.errors}
    if any(flags.get(int(i)) is None for i in indices):
        return None
    return sum(bool(flags[int(i)]) for i in indices)


def grouped(a: list[RunRecord], b: list[RunRecord], seed: int) -> dict:
    """Group against group: the seeds' accuracies, and image by image the fraction of seeds
    that get it wrong on each side."""
    acc_a = np.array([r.metrics.test_accuracy for r in a])
    acc_b = np.array([r.metrics.test_accuracy for r in b])
    diff = float(acc_b.mean() - acc_a.mean())
    ci = group_ci(acc_a, acc_b, seed)
    idx = a[0].indices()
    wrong_a = np.mean([~r.correct() for r in a], axis=0)
    wrong_b = np.mean([~r.correct() for r in b], axis=0)
    some = (wrong_a > 0) | (wrong_b > 0)
    return {"mode": "groups",
            "groups": {side: {"n": len(acc), "mean": float(acc.mean()),
                              "sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                              "accuracies": acc.tolist()}
                       for side, acc in (("a", acc_a), ("b", acc_b))},
            "difference": diff, "difference_ci95": ci, "welch": welch(acc_a, acc_b),
            "wrong_fraction": {int(i): [float(wa), float(wb)] for i, wa, wb in
                               zip(idx[some], wrong_a[some], wrong_b[some])},
            "fixed": idx[(wrong_a == 1) & (wrong_b == 0)].tolist(),  # in every seed
            "broke": idx[(wrong_a == 0) & (wrong_b == 1)].tolist(),
            "verdict": verdict(diff, ci)}


def _labels(*runs: RunRecord) -> dict[int, int]:
    """True class of every image some run got wrong (the others are right everywhere)."""
    return {e.index: e.true for r in runs for e in r.errors.errors}


def _confusion(r: RunRecord) -> np.ndarray:
    """A run's (K, K) confusion matrix (rows true) from its errors and the class counts."""
    k = len(r.classes)
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, ([e.true for e in r.errors.errors], [e.predicted for e in r.errors.errors]), 1)
    m[np.diag_indices(k)] = np.asarray(r.test.class_counts) - m.sum(1)
    return m


def differences(a: list[RunRecord], b: list[RunRecord]) -> dict:
    """What differs between the sides: the options of what they computed (config.yaml; not
    where and how they ran: folders, progress, workers, caches), timings, devices, torch."""
    keys = sorted({k for r in (*a, *b) for k in r.config} - RESUMABLE)
    options = {}
    for k in keys:
        va = sorted({repr(r.config.get(k)) for r in a})
        vb = sorted({repr(r.config.get(k)) for r in b})
        if va != vb:
            options[k] = {"a": [r.config.get(k) for r in a], "b": [r.config.get(k) for r in b]}
    timings = {}
    for k in TIMINGS:
        ma = float(np.mean([getattr(r.metrics, k) for r in a]))
        mb = float(np.mean([getattr(r.metrics, k) for r in b]))
        timings[k] = {"a": ma, "b": mb, "difference": mb - ma}
    return {"options": options, "timings": timings,
            "devices": {"a": sorted({r.metrics.device for r in a}),
                        "b": sorted({r.metrics.device for r in b})},
            "torch": {"a": sorted({r.metrics.torch for r in a}),
                      "b": sorted({r.metrics.torch for r in b})}}


def comparison(a: list[RunRecord], b: list[RunRecord], seed: int) -> dict:
    """Every figure of the comparison (compare.json without the tiles)."""
    body = paired(a[0], b[0], seed) if len(a) == len(b) == 1 else grouped(a, b, seed)
    side = lambda runs: [{"path": str(r.path), "run_id": r.run_id,  # noqa: E731
                          "test_accuracy": r.metrics.test_accuracy} for r in runs]
    return {"a": side(a), "b": side(b), "classes": a[0].classes, "test_images": a[0].test.count,
            **body, "differences": differences(a, b), "seed": seed}


def summary_line(c: dict) -> str:
    """The line a person reads first, e.g. 'B - A = +0.42 points [95% CI +0.12, +0.71],
    McNemar p = 0.006 (41 fixed, 17 broke): B is better'."""
    ci = c["difference_ci95"]
    interval = (f" [95% CI {_points(ci[0]):+.2f}, {_points(ci[1]):+.2f}]" if ci else
                " [no interval: fewer than two seeds a side]")
    line = f"B - A = {_points(c['difference']):+.2f} points{interval}"
    if c["mode"] == "runs":
        line += (f", McNemar p = {p_text(c['mcnemar_p'])} ({len(c['fixed'])} fixed, "
                 f"{len(c['broke'])} broke)")
    else:
        w = c["welch"]
        line += (f", Welch p = {p_text(w['p'])}" if w else ", no Welch test") + (
            f" ({len(c['fixed'])} fixed and {len(c['broke'])} broken in every seed)")
    return f"{line}: {c['verdict']}"


def check_out(out: Path, runs: list[RunRecord]) -> None:
    """The output folder can be written, and is no run's folder nor inside one."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    for r in runs:
        if out == r.path.resolve() or r.path.resolve() in out.parents:
            raise UserError(f"--compare.out {out}: inside the run folder {r.path}; choose "
                            "another folder")
    if (out / "config.yaml").exists():
        raise UserError(f"--compare.out {out}: a run folder; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / COMPARE_JSON).is_file():
        raise UserError(f"--compare.out {out}: holds files that are not a comparison's; choose "
                        "a new or empty folder")
    existing = next((p for p in [out, *out.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not _writable(existing):
        raise UserError(f"--compare.out {out}: cannot be written")


def _writable(path: Path) -> bool:
    import os
    return os.access(path, os.W_OK | os.X_OK)


def finite(obj):
    """`obj` with NaN and inf replaced by None (compare.json is strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def compare_runs(cfg: CompareSettings, log=print) -> dict:
    """Check both sides, the output folder and the data, compare, write compare.json and
    compare.html into --compare.out; return compare.json's content."""
    from ..device import resolve_device
    from ..finished.run import check_data_matches
    from ..io import atomic_write_bytes
    from ..records import write_json
    from .page import render_page
    from .tiles import build_tiles, empty_tiles
    cc = cfg.compare
    a, b = read_sides(*cc.sides(), cc.same_test_set)
    out = Path(cc.out)
    check_out(out, [*a, *b])
    data_dir = Path(cfg.data.dir)
    # the tiles' images and, when asserted, the test set itself: checked before any work
    if cc.same_test_set:
        test_set = check_asserted_test_set([*a, *b], data_dir)
    else:
        named = next((r for r in (*a, *b) if r.test.content), a[0])
        check_data_matches(named.test, data_dir)
        test_set = "the same test images (by content)" if named.test.content else \
            "the same source file (by its path and time: records without a content identity)"
    device = resolve_device(cc.device)
    c = {**comparison(a, b, cc.seed), "test_set": test_set}
    line = summary_line(c)
    no_weights = [r.path for r in (*a, *b) if not (r.path / CHECKPOINT).is_file()]
    if no_weights:  # a record of a run (its JSON files) without model.pt: no probabilities
        tiles = empty_tiles(len(a[0].classes))
        c["tiles_left_out"] = (f"{no_weights[0]} has no {CHECKPOINT} (a record without its "
                               "weights): no run's probabilities or maps are shown")
        log(f"tiles left out: {c['tiles_left_out']}")
    else:
        tiles = build_tiles(c, a, b, data_dir, device, cc.tiles)
    record = finite({**c, "summary": line, "shown": tiles.rows(c["classes"]),
                     "maps": tiles.maps})
    out.mkdir(parents=True, exist_ok=True)
    page = render_page({k: v for k, v in record.items() if k != "shown"}, tiles, line)
    atomic_write_bytes(out / COMPARE_HTML, page.encode())
    write_json(out / COMPARE_JSON, record)
    log(line)
    ls = c.get("label_suspect") or {}
    if ls.get("fixed") is not None and ls.get("broke") is not None:
        log(f"label-suspect (cleanlab, in each run's errors.json): {ls['fixed']} of the "
            f"{len(c['fixed'])} fixed, {ls['broke']} of the {len(c['broke'])} broken")
    log(f"-> {out / COMPARE_JSON}, {out / COMPARE_HTML}")
    return record


def check_asserted_test_set(runs: list[RunRecord], data_dir: Path) -> str:
    """--compare.same_test_set: every run's count and per-class counts, and the true label of
    every error any run lists, are those of --data.dir's test beton; UserError otherwise."""
    import torch
    from ..data.betons import beton_path, checked_metadata
    from ..data.loaders import load_all
    checked_metadata(data_dir)
    _, labels = load_all(beton_path(data_dir, "test"), torch.device("cpu"))
    labels = labels.numpy()
    for r in runs:
        idx = r.indices()
        if len(idx) != r.test.count or (len(idx) and idx.max() >= len(labels)):
            raise UserError(f"{r.path}: evaluated on {r.test.count} test images; "
                            f"{data_dir} holds {len(labels)}")
        if np.bincount(labels[idx], minlength=len(r.classes)).tolist() != r.test.class_counts:
            raise UserError(f"{r.path}: its test set's class counts differ from {data_dir}'s")
        wrong = [e for e in r.errors.errors if labels[e.index] != e.true]
        if wrong:
            raise UserError(f"{r.path}: test image {wrong[0].index} is a "
                            f"{r.classes[wrong[0].true]} in the run and a "
                            f"{r.classes[labels[wrong[0].index]]} in {data_dir}: not the same "
                            "test set")
    checked = sum(len(r.errors.errors) for r in runs)
    return (f"asserted by --compare.same_test_set: counts, class counts and the true labels of "
            f"{checked} listed errors agree with {data_dir}")


def compact(c: dict) -> dict:
    """A comparison for another record: every figure, the per-image lists as counts."""
    out = {k: v for k, v in c.items() if k not in ("fixed", "broke", "wrong_fraction")}
    out.update(fixed=len(c["fixed"]), broke=len(c["broke"]), summary=summary_line(c))
    return finite(out)


def compare_folders(a: list[Path], b: list[Path], seed: int = 0) -> dict:
    """scripts/compare.py's figures (without its page) for two sides of run folders."""
    sa, sb = read_sides([str(p) for p in a], [str(p) for p in b])
    return compact(comparison(sa, sb, seed))
