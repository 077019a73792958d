"""Every headline figure in one command: N seeds of the 20-epoch recipe, the calibration recipe,
explain on the first seed and the benchmark suite, within a time budget; one record (JSON and a
markdown table) with statistics, goals and the test images every seed gets wrong.

A stage that would not fit in what is left of the budget is skipped, and the record says so.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..compare.compare import compare_folders
from ..data.betons import beton_path
from ..config import option, require_range
from ..data.convert import prepare
from ..errors import UserError, say
from ..records import read_json
from .record import cross_seed, goals, stats, write_record
from ..training.runner import parse_config, train_run
from ..run_folder import ERRORS, EXPLAIN_JSON, RunFolder
from ..data.options import DataConfig
from ..device import PROJECT_ROOT, check_device, device_option, provenance, resolve_device

ROOT = PROJECT_ROOT  # explain.py and the benchmarks run from here
SMOKE = {"train_subset": 256, "test_subset": 100}  # CPU smoke mode: tiny subsets, 1 epoch
# what the budget assumes the first seed takes, before one has been measured
FIRST_SEED_SECONDS = {"smoke": 20.0, "cuda": 90.0, "cpu": 3600.0}


@dataclass(frozen=True)
class ReproduceConfig:
    """Reproduce: every headline figure in one command"""
    seeds: int = option(3, "seeds of the default 20-epoch recipe (smoke mode: 2)")
    calibration: str = option("configs/reference-26ep.yaml", "the calibration recipe ('': none)")
    explain: bool = option(True, "Grad-CAM of the first seed's errors (explain.py)")
    bench: bool = option(True, "the benchmark suite (benchmarks/run_all.py)")
    budget_minutes: float = option(10.0, "skip (and record) each stage that would not fit in "
                                   "what is left of this budget")
    out: str = option("runs/reproduce", "folder for the run folders and the always-wrong page")
    results: str = option("benchmarks/results", "folder for the record and its markdown table")
    smoke: bool = option(False, "CPU smoke mode: tiny subsets, 2 seeds, 1 epoch, small benchmarks")
    device: str = device_option()

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "seeds", 1, 100)
        require_range(prefix, self, "budget_minutes", 0, low_open=True)
        check_device(prefix, self.device)
        if self.calibration and not (ROOT / self.calibration).is_file() \
                and not Path(self.calibration).is_file():
            raise UserError(f"--{prefix}.calibration {self.calibration}: no such recipe")


@dataclass(frozen=True)
class ReproduceSettings:
    """scripts/reproduce.py's options."""
    data: DataConfig
    reproduce: ReproduceConfig


class Budget:
    """Wall time left of the budget; `fits(seconds)` says whether a stage may start."""

    def __init__(self, minutes: float):
        self.start, self.seconds = time.perf_counter(), minutes * 60
        self.skipped: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, stage: str, estimate: float) -> bool:
        left = self.seconds - self.elapsed()
        if estimate <= left:
            return True
        self.skipped.append({"stage": stage, "estimated_seconds": round(estimate, 1),
                             "seconds_left": round(left, 1)})
        say(f"skipping {stage}: needs ~{estimate:.0f} s, {max(left, 0):.0f} s of the budget left")
        return False


def _train(args: list[str], run_dir: Path, quiet: bool) -> dict:
    cfg = parse_config([*args, "--run.dir", str(run_dir), "--run.overwrite", "true"])
    m = train_run(cfg, log=(lambda *a, **k: None) if quiet else say)
    errors = read_json(run_dir / ERRORS, "errors file")["errors"]
    return {"run_dir": str(run_dir), "seed": m.seed, "test_accuracy": m.test_accuracy,
            "errors": m.errors, "epochs": m.epochs, "train_seconds": m.train_seconds,
            "compile_seconds": m.compile_seconds, "startup_seconds": m.startup_seconds,
            "images_per_second": m.images_per_second, "total_seconds": m.total_seconds,
            "error_indices": sorted(e["index"] for e in errors)}


def _script(args: list[str], what: str) -> None:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, text=True, stdout=sys.stdout,
                       stderr=subprocess.PIPE)
    if r.returncode:
        raise UserError(f"{what} failed: {r.stderr.strip().splitlines()[-1:] or r.returncode}")


def reproduce(rc: ReproduceConfig, data_dir: Path, source: str) -> tuple[dict, Path, Path]:
    """Run every stage that fits the budget; write the record: (record, json path, md path)."""
    budget, device = Budget(rc.budget_minutes), resolve_device(rc.device)
    # absolute paths: explain.py and the benchmarks run from the repository root
    out, results, data_dir = Path(rc.out).resolve(), Path(rc.results).resolve(), data_dir.resolve()
    recipe = _calibration_recipe(rc.calibration)
    _check_folders(out, results, 2 if rc.smoke else rc.seeds)
    record = {**provenance(device), "command": " ".join(sys.argv), "smoke": rc.smoke,
              "budget_minutes": rc.budget_minutes,
              "disabled": [name for name, on in (("calibration", bool(rc.calibration)),
                                                 ("explain", rc.explain), ("bench", rc.bench))
                           if not on]}
    t = time.perf_counter()
    meta = prepare(data_dir, source)
    record["data"] = {"source_kind": meta["source"]["kind"], "source": meta["source"]["path"],
                      "counts": meta["counts"], "prepare_seconds": time.perf_counter() - t}
    common = ["--data.dir", str(data_dir), "--training.device", rc.device]
    if rc.smoke:
        common += ["--data.train_subset", str(min(SMOKE["train_subset"], meta["counts"]["train"])),
                   "--data.test_subset", str(min(SMOKE["test_subset"], meta["counts"]["test"])),
                   "--training.epochs", "1", "--training.batch_size",
                   str(max(1, min(32, meta["counts"]["train"] // 2))),
                   "--training.eval_batch_size", "50", "--run.progress", "off"]
    seeds, n_seeds = [], 2 if rc.smoke else rc.seeds
    first = "smoke" if rc.smoke else device.type  # the prior for a stage nothing has timed yet
    for seed in range(n_seeds):
        estimate = seeds[-1]["total_seconds"] if seeds else FIRST_SEED_SECONDS[first]
        if not budget.fits(f"seed {seed}", estimate):
            break
        say(f"[seed {seed}]")
        seeds.append(_train([*common, "--training.seed", str(seed)], out / f"seed-{seed}",
                            rc.smoke))
    record["seeds"] = seeds
    record["summary"] = {k: stats([s[k] for s in seeds]) for k in (
        "test_accuracy", "train_seconds", "compile_seconds", "startup_seconds",
        "images_per_second")} if seeds else {}
    if recipe and budget.fits("calibration", 1.5 * (seeds[0]["total_seconds"] if seeds else
                                                    FIRST_SEED_SECONDS[first])):
        say("[calibration]")
        record["calibration"] = {"recipe": rc.calibration, **_train(
            ["-C", recipe, *common], out / "calibration", rc.smoke)}
    if seeds and record.get("calibration"):  # what scripts/compare.py says of them
        cal = [out / "calibration"]
        runs = [Path(s["run_dir"]) for s in seeds]
        record["vs_calibration"] = {"seed_0": compare_folders(cal, runs[:1]),
                                    "seeds": compare_folders(cal, runs) if len(runs) > 1
                                    else None}
    if rc.explain and not seeds:
        budget.skipped.append({"stage": "explain", "reason": "no seed was trained"})
    if rc.explain and seeds and budget.fits("explain", 60.0):
        say("[explain]")
        _script(["scripts/explain.py", "--run.dir", seeds[0]["run_dir"], "--data.dir",
                 str(data_dir), "--explain.device", rc.device,
                 *(["--explain.scored", "4"] if rc.smoke else [])], "explain.py")
        record["explain"] = read_json(Path(seeds[0]["run_dir"]) / EXPLAIN_JSON, "explain")
    if rc.bench and budget.fits("bench", 60.0 if rc.smoke else 300.0):
        say("[bench]")
        extra = ["--bench.suites", "loader,gradcam", "--bench.scale", "0.05",
                 "--bench.tag", "smoke"] if rc.smoke else []
        _script(["benchmarks/run_all.py", "--data.dir", str(data_dir), "--bench.device",
                 rc.device, "--bench.out", str(results), *extra], "the benchmark suite")
        record["bench"] = {"results": str(results)}
    record["cross_seed"] = cross_seed({s["seed"]: s["error_indices"] for s in seeds})
    if seeds:
        always_wrong_page(record["cross_seed"]["always_wrong"], data_dir, meta["classes"],
                          {s["seed"]: s["run_dir"] for s in seeds}, out / "always-wrong.png")
    record["goals"] = {} if rc.smoke else goals(record)  # smoke runs say nothing of the goals
    record["skipped"] = budget.skipped
    record["seconds"] = budget.elapsed()
    return (record, *write_record(record, results))


def _calibration_recipe(name: str) -> str:
    """The calibration recipe's path ('' for none), checked as a config before anything runs."""
    if not name:
        return ""
    path = Path(name) if Path(name).is_file() else ROOT / name
    parse_config(["-C", str(path)])  # a bad recipe is found now, not after the seeds
    return str(path)


def _check_folders(out: Path, results: Path, seeds: int) -> None:
    """Every folder this run writes can be written; the previous run's outputs are removed, so
    that nothing left from it can pass for this run's."""
    for folder in (out, results):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: exists and is not a folder")
    names = [f"seed-{k}" for k in range(max(seeds, 100))] + ["calibration"]
    for name in names:
        if (out / name).exists():
            with RunFolder(out / name) as folder:  # refuses a folder of someone else's files
                folder.clear()
    (out / "always-wrong.png").unlink(missing_ok=True)


def always_wrong_page(indices: list[int], data_dir: Path, classes: list[str],
                      runs: dict[int, str], path: Path, limit: int = 48) -> None:
    """A gallery page of the test images every seed gets wrong: label and each seed's guess."""
    from ..explain.figures import plot_image_grid
    from ..data.loaders import load_all
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


