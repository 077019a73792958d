"""Every headline figure in one command: N seeds of the 20-epoch recipe, the calibration recipe,
explain on the first seed and the benchmark suite, within a time budget; one record (JSON and a
markdown table) with statistics, goals and the test images every seed gets wrong.

A stage that would not fit in what is left of the budget is skipped, and the record says so.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .betons import beton_path
from .config import option, require, require_range
from .convert import prepare
from .errors import UserError, say
from .records import read_json, write_json
from .runner import parse_config, train_run
from .timing import DEVICE_NAMES, provenance, resolve_device, slug

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {"train_subset": 256, "test_subset": 100}  # CPU smoke mode: tiny subsets, 1 epoch
GOALS = {"train_seconds": 12.0, "gradcam_seconds": 0.3}  # on one H100: reported against


@dataclass
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
    device: str = option("auto", "auto, cpu, cuda or cuda:N")

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "seeds", 1, 100)
        require_range(prefix, self, "budget_minutes", 0, low_open=True)
        require(bool(DEVICE_NAMES.fullmatch(self.device)), f"{prefix}.device", self.device,
                "auto, cpu, cuda or cuda:N")
        if self.calibration and not (ROOT / self.calibration).is_file() \
                and not Path(self.calibration).is_file():
            raise UserError(f"--{prefix}.calibration {self.calibration}: no such recipe")


def stats(values: list[float]) -> dict:
    """n, mean, standard deviation (0 for one value), min and max."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def cross_seed(errors: dict[int, list[int]]) -> dict:
    """Test images every seed gets wrong, and those only some seeds do."""
    sets = [set(v) for v in errors.values()]
    always = set.intersection(*sets) if sets else set()
    return {"seeds": sorted(errors), "always_wrong": sorted(always),
            "sometimes_wrong": sorted(set.union(*sets) - always) if sets else []}


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
    errors = read_json(run_dir / "errors.json", "errors file")["errors"]
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


def _goals(record: dict) -> dict:
    """Each goal with its target, what was measured and by how much it was met or missed."""
    out = {}
    seeds, cal = record["summary"], record.get("calibration")
    if seeds and cal:
        out["accuracy_vs_calibration"] = {
            "target": cal["test_accuracy"], "measured": seeds["test_accuracy"]["mean"],
            "margin": seeds["test_accuracy"]["mean"] - cal["test_accuracy"]}
    if seeds and record["device_type"] == "cuda":
        out["train_seconds_20_epochs"] = {
            "target": GOALS["train_seconds"], "measured": seeds["train_seconds"]["mean"],
            "margin": GOALS["train_seconds"] - seeds["train_seconds"]["mean"],
            "note": "the goal is for one H100"}
    if record.get("explain"):
        out["gradcam_seconds"] = {"target": GOALS["gradcam_seconds"],
                                  "measured": record["explain"]["gradcam_seconds"],
                                  "margin": GOALS["gradcam_seconds"]
                                  - record["explain"]["gradcam_seconds"]}
    for goal in out.values():
        goal["met"] = goal["margin"] >= 0
    return out


def reproduce(rc: ReproduceConfig, data_dir: Path, source: str) -> tuple[dict, Path, Path]:
    """Run every stage that fits the budget; write the record: (record, json path, md path)."""
    budget, device = Budget(rc.budget_minutes), resolve_device(rc.device)
    out = Path(rc.out)
    record = {**provenance(device), "command": " ".join(sys.argv), "smoke": rc.smoke,
              "budget_minutes": rc.budget_minutes}
    t = time.perf_counter()
    meta = prepare(data_dir, source)
    record["data"] = {"source_kind": meta["source"]["kind"], "source": meta["source"]["path"],
                      "counts": meta["counts"], "prepare_seconds": time.perf_counter() - t}
    common = ["--data.dir", str(data_dir), "--training.device", rc.device]
    if rc.smoke:
        common += ["--data.train_subset", str(min(SMOKE["train_subset"], meta["counts"]["train"])),
                   "--data.test_subset", str(min(SMOKE["test_subset"], meta["counts"]["test"])),
                   "--training.epochs", "1", "--training.batch_size", "32",
                   "--training.eval_batch_size", "50", "--run.progress", "off"]
    seeds, n_seeds = [], 2 if rc.smoke else rc.seeds
    for seed in range(n_seeds):
        estimate = seeds[-1]["total_seconds"] if seeds else 0.0
        if not budget.fits(f"seed {seed}", estimate):
            break
        say(f"[seed {seed}]")
        seeds.append(_train([*common, "--training.seed", str(seed)], out / f"seed-{seed}",
                            rc.smoke))
    record["seeds"] = seeds
    record["summary"] = {k: stats([s[k] for s in seeds]) for k in (
        "test_accuracy", "train_seconds", "compile_seconds", "startup_seconds",
        "images_per_second")} if seeds else {}
    if rc.calibration and budget.fits("calibration", 1.5 * (seeds[0]["total_seconds"]
                                                            if seeds else 0.0)):
        say("[calibration]")
        recipe = rc.calibration if Path(rc.calibration).is_file() else str(ROOT / rc.calibration)
        record["calibration"] = {"recipe": rc.calibration, **_train(
            ["-C", recipe, *common], out / "calibration", rc.smoke)}
    if rc.explain and seeds and budget.fits("explain", 60.0):
        say("[explain]")
        _script(["scripts/explain.py", "--run.dir", seeds[0]["run_dir"], "--data.dir",
                 str(data_dir), "--explain.device", rc.device], "explain.py")
        record["explain"] = read_json(Path(seeds[0]["run_dir"]) / "explain.json", "explain")
    if rc.bench and budget.fits("bench", 60.0 if rc.smoke else 300.0):
        say("[bench]")
        extra = ["--bench.suites", "loader,gradcam", "--bench.scale", "0.05",
                 "--bench.tag", "smoke"] if rc.smoke else []
        _script(["benchmarks/run_all.py", "--data.dir", str(data_dir), "--bench.device",
                 rc.device, "--bench.out", rc.results, *extra], "the benchmark suite")
        record["bench"] = {"results": rc.results}
    record["cross_seed"] = cross_seed({s["seed"]: s["error_indices"] for s in seeds})
    if seeds:
        always_wrong_page(record["cross_seed"]["always_wrong"], data_dir, meta["classes"],
                          {s["seed"]: s["run_dir"] for s in seeds}, out / "always-wrong.png")
    record["goals"] = {} if rc.smoke else _goals(record)  # smoke runs say nothing of the goals
    record["skipped"] = budget.skipped
    record["seconds"] = budget.elapsed()
    return (record, *write_record(record, Path(rc.results)))


def always_wrong_page(indices: list[int], data_dir: Path, classes: list[str],
                      runs: dict[int, str], path: Path, limit: int = 48) -> None:
    """A gallery page of the test images every seed gets wrong: label and each seed's guess."""
    from .figures import plot_image_grid
    from .loaders import load_all
    shown = indices[:limit]
    guesses = {seed: {e["index"]: e["predicted"] for e in read_json(
        Path(run) / "errors.json", "errors file")["errors"]} for seed, run in runs.items()}
    images = labels = np.zeros((0,))
    if shown:
        x, y = load_all(beton_path(data_dir, "test"), torch.device("cpu"), indices=shown)
        images, labels = x.permute(0, 2, 3, 1).numpy(), y.numpy()
    captions = [f"#{i} {classes[labels[k]]}\n→ " + ", ".join(
        sorted({classes[g[i]] for g in guesses.values()})) for k, i in enumerate(shown)]
    plot_image_grid(images, captions, f"Test images every seed gets wrong ({len(indices)}; "
                    f"{len(shown)} shown): true label, then the seeds' predictions", path)


def write_record(record: dict, results: Path) -> tuple[Path, Path]:
    """reproduce-<device>.json and its markdown table in `results`."""
    results.mkdir(parents=True, exist_ok=True)
    name = f"reproduce-{'smoke-' if record['smoke'] else ''}{slug(record)}"
    json_path, md_path = results / f"{name}.json", results / f"{name}.md"
    write_json(json_path, record)
    from .errors import atomic_write_bytes
    atomic_write_bytes(md_path, markdown(record).encode())
    return json_path, md_path


def markdown(r: dict) -> str:
    """The record as the tables the README shows."""
    def f(x, pct=False):
        return "-" if x is None else (f"{100 * x:.2f}%" if pct else f"{x:.2f}")

    s = r["summary"]
    lines = [f"### {r['device']}, torch {r['torch']}{', CUDA ' + r['cuda'] if r['cuda'] else ''}"
             f", {r['date']}, git {r['git_sha']}", "",
             f"Data: {r['data']['source_kind']} ({Path(r['data']['source']).name}), "
             f"{r['data']['counts']['train']:,} train / {r['data']['counts']['test']:,} test"
             f"{' (smoke subsets)' if r['smoke'] else ''}. Command: `{r['command']}`.", "",
             "| run | seeds | test accuracy mean ± sd (min–max) | train s mean | compile s mean "
             "| first step s mean | img/s mean |", "|---|---|---|---|---|---|---|"]
    if s:
        a = s["test_accuracy"]
        lines.append(f"| default recipe, {r['seeds'][0]['epochs']} epochs | {a['n']} | {f(a['mean'], 1)} ± {f(a['sd'], 1)} "
                     f"({f(a['min'], 1)}–{f(a['max'], 1)}) | {f(s['train_seconds']['mean'])} | "
                     f"{f(s['compile_seconds']['mean'])} | {f(s['startup_seconds']['mean'])} | "
                     f"{s['images_per_second']['mean']:,.0f} |")
    c = r.get("calibration")
    if c:
        lines.append(f"| calibration {Path(c['recipe']).name}, {c['epochs']} epochs | 1 | {f(c['test_accuracy'], 1)}"
                     f" | {f(c['train_seconds'])} | {f(c['compile_seconds'])} | "
                     f"{f(c['startup_seconds'])} | {c['images_per_second']:,.0f} |")
    if r.get("explain"):
        e = r["explain"]
        lines += ["", f"Grad-CAM of all {e['errors']} errors of seed 0 (both classes): "
                  f"{e['gradcam_seconds']:.3f} s; rendering {e['render_seconds']:.1f} s."]
    cs = r["cross_seed"]
    lines += ["", f"Across seeds {cs['seeds']}: {len(cs['always_wrong'])} test images are always "
              f"wrong, {len(cs['sometimes_wrong'])} only sometimes."]
    if r["goals"]:
        lines += ["", "| goal | target | measured | met | margin |", "|---|---|---|---|---|"]
        for name, g in r["goals"].items():
            lines.append(f"| {name} | {g['target']:.4g} | {g['measured']:.4g} | "
                         f"{'yes' if g['met'] else 'no'} | {g['margin']:+.4g} |")
    for s in r["skipped"]:
        lines.append(f"\nSkipped {s['stage']}: needed ~{s['estimated_seconds']} s, "
                     f"{s['seconds_left']} s of the {r['budget_minutes']}-minute budget left.")
    return "\n".join(lines) + "\n"


def load_records(results: Path) -> list[dict]:
    """Every reproduce record in `results` (smoke ones left out), newest first."""
    records = [json.loads(p.read_text()) for p in sorted(results.glob("reproduce-*.json"))]
    return sorted((r for r in records if not r.get("smoke")), key=lambda r: r["date"],
                  reverse=True)
