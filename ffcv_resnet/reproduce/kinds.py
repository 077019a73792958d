"""What each kind of stage of the plan runs and what it records: the preflight's checks, a
training run's figures (a seed, the calibration against the seeds, an ablation against seed 0),
explain's seconds and the benchmark plan; and the page of the images every seed gets wrong."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..compare.compare import compare_folders
from ..data.betons import beton_path
from ..errors import UserError, say
from ..records import Errors, Metrics, read_json
from ..run_folder import ERRORS, EXPLAIN_JSON, METRICS
from . import plan as P
from .checks import clear_run_folder
from .process import NOT_RETRIED, last_error
from .options import ReproduceConfig
from .record import Record, TrainResult


class Reproduction(Protocol):
    """What a stage needs of the command running it (stages.Reproduction)."""
    rc: ReproduceConfig
    data_dir: Path
    results: Path
    out: Path
    device: torch.device
    kind: str  # "smoke", "cuda" or "cpu": which priors and benchmark suites apply
    record: Record
    compiled_before: bool  # has a run of this command filled its compile cache?
    preflight_compiled: bool  # did the preflight compile the training step there?

    def run(self, stage: P.Stage, args: list[str], limit: float | None = None,
            log_name: str = "") -> tuple[int, Path]: ...

    def failed(self, stage: str, error: str, log: Path | None, **extra) -> None: ...

    def common(self) -> list[str]: ...

    def slug(self) -> str: ...

    def seconds_left(self) -> float: ...

PREFLIGHT_JSON = "preflight.json"


def preflight(r: Reproduction, stage: P.Stage) -> None:
    """scripts/preflight.py within its limit; its checks (written as each ends) go to the
    record, a failed compile makes every later stage eager."""
    out = r.out / PREFLIGHT_JSON
    out.unlink(missing_ok=True)
    code, log = r.run(stage, [
        "scripts/preflight.py", "--data.dir", str(r.data_dir), "--preflight.out",
        str(out), "--preflight.device", r.rc.device, "--preflight.smoke",
        str(r.rc.smoke).lower(), "--preflight.train_args",
        shlex.join(r.common()[2:])], limit=r.rc.preflight_seconds)
    checks = json.loads(out.read_text()) if out.is_file() else []
    r.record.preflight = checks
    for c in checks:
        state = "ok" if c["ok"] else ("skipped" if c["ok"] is None else "FAILED")
        say(f"  {c['check']}: {state}: {c.get('detail') or c.get('error') or c['skipped']}")
    compiled = next((c for c in checks if c["check"] == "compiled training step"), None)
    if compiled and compiled["ok"] is False:
        r.record.compile_off = f"preflight: {compiled['error']}: every stage ran eager"
    r.preflight_compiled = bool(compiled and compiled["ok"])
    bad = [f"{c['check']}: {c['error']}" for c in checks if c["ok"] is False]
    if code:
        bad.append(f"exit {code}: {last_error(log)} (after {len(checks)} checks)")
    if bad:
        r.failed("preflight", "; ".join(bad), log if code else None)


def train(r: Reproduction, stage: P.Stage) -> None:
    """One training run (retried eager once when it failed with compile on); its figures
    go to the record as the stage's role says."""
    run_dir = r.out / stage.folder
    try:
        clear_run_folder(run_dir)
    except UserError as e:  # in use by another process since the start: this stage fails
        r.failed(stage.name, str(e), None)
        return
    base = ["scripts/train.py", *r.common(), "--training.seed", str(stage.seed),
            *(["-C", stage.recipe] if stage.recipe else []), "--run.dir", str(run_dir),
            "--run.overwrite", "true",
            # no last.pt: nothing here resumes, and 20 of them (89 MB each) eat the budget
            "--run.checkpoint_every", "0"]
    eager = ["--training.compile", "off"]
    code, log = r.run(stage, base + (eager if r.record.compile_off else []))
    retried = None
    if code not in NOT_RETRIED and not r.record.compile_off and r.device.type == "cuda":
        first = last_error(log)
        say(f"[{stage.name}] failed with compile on ({first}); retrying with compile off")
        retried = {"compile_on_error": first, "log": str(log)}
        code, log = r.run(stage, base + eager,
                          log_name=stage.log_name.replace(".log", "-eager.log"))
    if code:
        r.failed(stage.name, f"exit {code}: {last_error(log)}", log,
                 **({"retried": retried} if retried else {}))
        return
    m = Metrics.from_dict(read_json(run_dir / METRICS, "metrics"), str(run_dir / METRICS))
    errors = Errors.from_dict(read_json(run_dir / ERRORS, "errors file"),
                              str(run_dir / ERRORS))
    result = TrainResult.from_run(stage, run_dir, log, m, errors, cache_state(r, stage, m))
    result.retried = retried
    say(f"[{stage.name}] test accuracy {m.test_accuracy:.2%}, training "
        f"{m.train_seconds:.1f} s, warm-up {m.compile_seconds:.1f} s"
        f"{f' ({result.compile_cache} compile cache)' if m.compile == 'on' else ''}")
    file_result(r, stage, result)


def cache_state(r: Reproduction, stage: P.Stage, m: Metrics) -> str:
    """What this run's compile found in the command's cache: nothing (cold), the training
    graph the preflight compiled, the graphs of an earlier run (warm), or graphs of other
    shapes (a recipe of another batch)."""
    if m.compile != "on":
        return "off"
    before, r.compiled_before = r.compiled_before, True
    if before:
        return "shared" if stage.role == "calibration" else "warm"
    return "preflight" if r.preflight_compiled else "cold"


def file_result(r: Reproduction, stage: P.Stage, result: TrainResult) -> None:
    """A finished run into the record: a seed; the calibration with compare.py's figures
    against the seeds; an ablation with its figures against seed 0."""
    rec = r.record
    runs = [Path(s.run_dir) for s in rec.seeds]
    if stage.role == "seed":
        rec.seeds.append(result)
    elif stage.role == "calibration":
        rec.calibration = result
        if runs:
            cal = [Path(result.run_dir)]
            rec.vs_calibration = {"seed_0": _compared(cal, runs[:1]),
                                  "seeds": _compared(cal, runs) if len(runs) > 1 else None}
    else:
        base = next((s for s in rec.seeds if s.seed == 0), None)
        result.vs_seed_0 = _compared([Path(base.run_dir)], [Path(result.run_dir)]) \
            if base else None
        rec.ablations.append(result)


def explain(r: Reproduction, stage: P.Stage) -> None:
    """explain.py on seed 0; its explain.json in the record."""
    run = Path(r.record.seeds[0].run_dir)
    code, log = r.run(stage, [
        "scripts/explain.py", "--run.dir", str(run), "--data.dir", str(r.data_dir),
        "--explain.device", r.rc.device, *(["--explain.scored", "4"] if r.rc.smoke else [])])
    if code:
        r.failed("explain", f"exit {code}: {last_error(log)}", log)
        return
    r.record.explain = {**read_json(run / EXPLAIN_JSON, "explain record"), "log": str(log)}
    e = r.record.explain
    say(f"[explain] maps {e['cams_seconds']:.2f} s, scores {e['scores_seconds']:.2f} s")


def bench(r: Reproduction, stage: P.Stage) -> None:
    """The benchmark subset within its share of the budget: run_all estimates each suite
    from its sizes on this device and skips (and names) those that do not fit."""
    seconds = min(r.rc.bench_seconds or P.BENCH_SECONDS[r.kind], r.seconds_left())
    say(f"[bench] within {seconds:.0f} s")
    suites = P.BENCH_SUITES[r.kind]
    extra = (["--bench.suites", suites] if suites else []) + (
        ["--bench.scale", "0.05", "--bench.tag", "smoke"] if r.rc.smoke else [])
    if r.device.type == "cuda":  # the compile-mode autotuning takes minutes: not here
        extra += ["--bench.compile_modes", "default"]
    plan = r.results / f"bench-plan{'-smoke' if r.rc.smoke else ''}-{r.slug()}.json"
    plan.unlink(missing_ok=True)  # an earlier command's plan is not this one's
    code, log = r.run(stage, [
        "benchmarks/run_all.py", "--data.dir", str(r.data_dir), "--bench.device",
        r.rc.device, "--bench.out", str(r.results), "--bench.budget_seconds",
        f"{seconds:.0f}", *extra], limit=seconds + 30)  # a suite over its estimate stops
    ran = read_json(plan, "benchmark plan")["suites"] if plan.is_file() else []
    r.record.bench = {"results": str(r.results), "suites": suites or "all",
                      "budget_seconds": seconds, "plan": ran, "log": str(log)}
    if code:
        r.failed("bench", f"exit {code}: {last_error(log)}", log)
        return
    for x in ran:
        if x["skipped"]:
            say(f"[bench] skipped {x['suite']}: needs ~{x['estimated_seconds']:.0f} s")


RUNNERS = {"preflight": preflight, "train": train, "explain": explain, "bench": bench}


def _compared(a: list[Path], b: list[Path]) -> dict:
    """compare.py's figures of two sides, or {"error": why} when they cannot be compared (e.g.
    a recipe that changed the test subset): recorded, and the command goes on."""
    try:
        return compare_folders(a, b)
    except UserError as e:
        say(f"comparison not made: {e}")
        return {"error": str(e), "summary": f"not compared ({e})"}


def always_wrong_page(indices: list[int], data_dir: Path, classes: list[str],
                      runs: dict[int, str], path: Path, limit: int = 48) -> None:
    """A gallery page of the test images every seed gets wrong: label and each seed's guess."""
    from ..data.loaders import load_all
    from ..explain.figures import plot_image_grid
    shown = indices[:limit]
    guesses = {seed: {e["index"]: e["predicted"] for e in read_json(
        Path(run) / ERRORS, "errors file")["errors"]} for seed, run in runs.items()}
    images = labels = np.zeros((0,))
    if shown:
        x, y = load_all(beton_path(data_dir, "test"), torch.device("cpu"), indices=shown)
        images, labels = x.permute(0, 2, 3, 1).numpy(), y.numpy()
    captions = [f"#{i} {classes[labels[k]]}\n→ " + ", ".join(
        sorted({classes[g[i]] for g in guesses.values()})) for k, i in enumerate(shown)]
    plot_image_grid(images, captions, f"Test images every seed gets wrong ({len(indices)}; "
                    f"{len(shown)} shown): true label, then the seeds' predictions", path)
