"""Every headline figure in one command, built for one short GPU call: the data, a preflight of
the device, then the stages in priority order (seed 0, explain, a benchmark subset, the other
seeds, the calibration recipe), each within what is left of a time budget.

Each training, explain and benchmark stage runs in its own process with its own log, so a CUDA
error, an out-of-memory, a divergence or a crash ends that stage only: it is recorded with its
one-line error and log, and the next stage runs (a failure with compile on is retried once
eager). The record (JSON and markdown) is rewritten atomically after every stage, and the
console is copied to a log beside it, so a SIGKILL at a time limit leaves every finished stage
on disk. The exit status is 1 when any stage failed.
"""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..compare.compare import compare_folders
from ..config import option, require_range
from ..data.betons import beton_path
from ..data.convert import prepare
from ..data.options import DataSource
from ..device import PROJECT_ROOT, check_device, device_option, provenance, resolve_device, slug
from ..errors import DataError, UserError, say
from ..records import read_json
from ..run_folder import ERRORS, EXPLAIN_JSON, METRICS, RunFolder, check_output_folder
from ..training.runner import parse_config
from .preflight import preflight
from .record import bundle, cross_seed, goals, summary, write_record

ROOT = PROJECT_ROOT  # explain.py, train.py and the benchmarks run from here
SMOKE = {"train_subset": 256, "test_subset": 100}  # CPU smoke mode: tiny subsets, 1 epoch
# what the budget assumes a stage takes before one like it has been timed
FIRST_SEED_SECONDS = {"smoke": 30.0, "cuda": 120.0, "cpu": 3600.0}
EXPLAIN_SECONDS = {"smoke": 60.0, "cuda": 45.0, "cpu": 300.0}
ABLATIONS = ("configs/ablations/flip-alternate.yaml", "configs/ablations/ema.yaml",
             "configs/ablations/bn-bias-lr-64.yaml", "configs/ablations/init-pytorch.yaml",
             "configs/ablations/lr-0.2.yaml",
             "configs/ablations/init-pytorch-lr-0.2.yaml")  # in order, each as the budget allows
BENCH_SECONDS = {"smoke": 90.0, "cuda": 150.0, "cpu": 900.0}  # the most the benchmarks get
BENCH_MIN_SECONDS = 30.0  # less than this left: the benchmark stage is skipped
# in order: the suites run_all tries, each only when its estimate fits what is left
BENCH_SUITES = {"smoke": "loader,gradcam", "cuda": "loader,gradcam,train,startup,epoch",
                "cpu": ""}


class StageFailed(UserError):
    """A stage failed (recorded with its error and log); the others ran: exit status 1."""

    exit_code = 1


@dataclass(frozen=True)
class ReproduceConfig:
    """Reproduce: every headline figure in one command"""
    seeds: int = option(3, "seeds of the default 20-epoch recipe (smoke mode: 2)")
    calibration: str = option("configs/reference-26ep.yaml", "the calibration recipe ('': none)")
    ablations: tuple = option(ABLATIONS, "YAML files, each a change to the default recipe run as "
                              "one seed-0 run after the core stages and compared with seed 0 "
                              "('': none)", many=True)
    explain: bool = option(True, "explain.py on the first seed's errors")
    bench: bool = option(True, "a benchmark subset (benchmarks/run_all.py) within the budget")
    budget_minutes: float = option(7.0, "skip (and record) each stage that would not fit in what "
                                   "is left of this budget: 7 lets the whole command end within "
                                   "8 minutes on one H100")
    out: str = option("runs/reproduce", "folder for the run folders, their logs and the "
                      "always-wrong page")
    results: str = option("benchmarks/results", "folder for the record and its markdown table")
    bundle: str = option("", "also write every record, log, history, metrics, explain.json and "
                         "report.png into this .tar.gz (rewritten after every stage)")
    train_args: str = option("", "extra train.py options for every run, e.g. "
                             "'--training.epochs 10'")
    smoke: bool = option(False, "CPU smoke mode: tiny subsets, 2 seeds, 1 epoch, small benchmarks")
    device: str = device_option()

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "seeds", 1, 100)
        require_range(prefix, self, "budget_minutes", 0, low_open=True)
        check_device(prefix, self.device)
        if self.calibration and not (ROOT / self.calibration).is_file() \
                and not Path(self.calibration).is_file():
            raise UserError(f"--{prefix}.calibration {self.calibration}: no such recipe")
        names = [Path(a).stem for a in self.ablations if a]
        if len(set(names)) < len(names):
            raise UserError(f"--{prefix}.ablations: two files named {names}; each run folder is "
                            "named after its file")
        if self.bundle and not self.bundle.endswith(".tar.gz"):
            raise UserError(f"--{prefix}.bundle {self.bundle}: expected a .tar.gz path")


@dataclass(frozen=True)
class ReproduceSettings:
    """scripts/reproduce.py's options."""
    data: DataSource
    reproduce: ReproduceConfig


class Budget:
    """Wall time left of the budget; `fits(stage, seconds)` says whether a stage may start."""

    def __init__(self, minutes: float):
        self.start, self.seconds = time.perf_counter(), minutes * 60
        self.skipped: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, stage: str, estimate: float) -> bool:
        left = self.left()
        if estimate <= left:
            return True
        self.skipped.append({"stage": stage, "estimated_seconds": round(estimate, 1),
                             "seconds_left": round(left, 1)})
        say(f"skipping {stage}: needs ~{estimate:.0f} s, {max(left, 0):.0f} s of the budget left")
        return False


class Tee:
    """stdout copied to a log file as it is written (the console of a call may be cut)."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "w", buffering=1)

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()

    def close(self) -> None:
        self.file.close()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _last_error(log: Path) -> str:
    """The last `error:` line of a stage's log, or its last line."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if x.startswith("error:") or "Error" in x.split(":")[0]]
    return (errors or lines or ["no output"])[-1][:300]


class Reproduction:
    """One reproduce command's stages, record and files."""

    def __init__(self, rc: ReproduceConfig, data_dir: Path, results: Path, out: Path,
                 device: torch.device):
        self.rc, self.data_dir, self.results, self.out, self.device = (rc, data_dir, results,
                                                                        out, device)
        self.budget = Budget(rc.budget_minutes)
        self.kind = "smoke" if rc.smoke else device.type
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        results.mkdir(parents=True, exist_ok=True)
        self.compile_off = False  # set when preflight finds compile broken
        self.compile_cache = out / "compile-cache"
        shutil.rmtree(self.compile_cache, ignore_errors=True)
        self.compiled_before = False  # has a run of this command filled the cache?
        self.record = {**provenance(device), "command": " ".join(sys.argv), "smoke": rc.smoke,
                       "budget_minutes": rc.budget_minutes, "stages": [], "failed": [],
                       "seeds": [], "disabled": [name for name, on in (
                           ("calibration", bool(rc.calibration)), ("explain", rc.explain),
                           ("bench", rc.bench), ("ablations", any(rc.ablations))) if not on],
                       "ablations": []}
        name = f"reproduce-{'smoke-' if rc.smoke else ''}{slug(self.record)}"
        self.log_path = results / f"{name}.log"

    # --- the record, after every stage ---
    def save(self) -> tuple[Path, Path]:
        r = self.record
        seeds = r["seeds"]
        r["summary"] = summary(seeds)
        r["cross_seed"] = cross_seed({s["seed"]: s["error_indices"] for s in seeds})
        r["goals"] = {} if self.rc.smoke else goals(r)
        r["skipped"] = self.budget.skipped
        r["seconds"] = self.budget.elapsed()
        paths = write_record(r, self.results)
        if self.rc.bundle:
            bundle(Path(self.rc.bundle), r, [*paths, self.log_path], self.out)
        return paths

    def failed(self, stage: str, error: str, log: Path | None, **extra) -> None:
        entry = {"stage": stage, "error": error, "log": str(log) if log else None, **extra}
        self.record["failed"].append(entry)
        say(f"[{stage}] failed: {error}" + (f" (log: {log})" if log else ""))

    # --- running a stage in its own process ---
    def run(self, stage: str, args: list[str], limit: float | None = None) -> tuple[int, Path]:
        """A script in a fresh process, stdout and stderr to the stage's log; (status, log).
        It is stopped when it outlives the budget by a minute, or its own `limit` (seconds)."""
        log = self.logs / f"{stage.replace(' ', '-')}.log"
        timeout = max(60.0, self.budget.left() + 60.0)
        if limit is not None:
            timeout = min(timeout, limit)
        with open(log, "w") as f:
            try:
                code = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f,
                                      stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                f.write(f"\nerror: stopped after {timeout:.0f} s (the budget)\n")
                code = 124
        return code, log

    def train(self, stage: str, args: list[str], run_dir: Path) -> dict | None:
        """One training run (retried eager once when it failed with compile on)."""
        # no last.pt: nothing here resumes, and 20 of them (89 MB each) would eat the budget
        base = ["scripts/train.py", *self.common(), *args, "--run.dir", str(run_dir),
                "--run.overwrite", "true", "--run.checkpoint_every", "0"]
        compile_flag = ["--training.compile", "off"] if self.compile_off else []
        code, log = self.run(stage, base + compile_flag)
        retried = None
        if code not in (0, 2, 3) and not self.compile_off and self.device.type == "cuda":
            first = _last_error(log)
            say(f"[{stage}] failed with compile on ({first}); retrying with compile off")
            retried = {"compile_on_error": first, "log": str(log)}
            code, log = self.run(stage + " eager", base + ["--training.compile", "off"])
        if code:
            self.failed(stage, f"exit {code}: {_last_error(log)}", log,
                        **({"retried": retried} if retried else {}))
            return None
        m = read_json(run_dir / METRICS, "metrics")
        errors = read_json(run_dir / ERRORS, "errors file")["errors"]
        # a fresh process each; its compile found this command's cache empty or filled by an
        # earlier run (graphs of the same shapes for the seeds, others for the calibration)
        cache = "off" if m["compile"] != "on" else ("warm" if self.compiled_before else "cold")
        if cache == "warm" and stage == "calibration":
            cache = "shared"  # the cache holds the seeds' graphs, of other shapes (batch 500)
        self.compiled_before |= m["compile"] == "on"
        say(f"[{stage}] test accuracy {m['test_accuracy']:.2%}, training "
            f"{m['train_seconds']:.1f} s, warm-up {m['compile_seconds']:.1f} s"
            f"{f' ({cache} compile cache)' if cache != 'off' else ''}")
        return {"run_dir": str(run_dir), "log": str(log), "seed": m["seed"],
                "test_accuracy": m["test_accuracy"], "errors": m["errors"],
                "epochs": m["epochs"], "train_seconds": m["train_seconds"],
                "compile_seconds": m["compile_seconds"], "compile": m["compile"],
                "compile_cache": cache,
                "startup_seconds": m["startup_seconds"],
                "images_per_second": m["images_per_second"], "total_seconds": m["total_seconds"],
                "error_indices": sorted(e["index"] for e in errors),
                **({"retried": retried} if retried else {})}

    def common(self) -> list[str]:
        """The options every training run gets; one compile cache for this command, emptied
        at its start, so the first run's compile is cold and the record can say which were
        warm."""
        args = ["--data.dir", str(self.data_dir), "--training.device", self.rc.device,
                "--run.progress", "off", "--training.compile_cache", str(self.compile_cache)]
        if self.rc.smoke:
            counts = self.record["data"]["counts"]
            args += ["--data.train_subset", str(min(SMOKE["train_subset"], counts["train"])),
                     "--data.test_subset", str(min(SMOKE["test_subset"], counts["test"])),
                     "--training.epochs", "1", "--training.batch_size",
                     str(max(1, min(32, counts["train"] // 2))), "--training.eval_batch_size",
                     "50"]
        return args + self.rc.train_args.split()

    # --- the stages ---
    def data(self, source: str) -> dict:
        t = time.perf_counter()
        meta = prepare(self.data_dir, source)
        self.record["data"] = {"source_kind": meta["source"]["kind"],
                               "source": meta["source"]["path"], "counts": meta["counts"],
                               "prepare_seconds": time.perf_counter() - t}
        return meta

    def preflight(self) -> None:
        say("[preflight]")
        checks = preflight(self.device, self.data_dir, 32 if self.rc.smoke else 512)
        for c in checks:
            state = "ok" if c["ok"] else ("skipped" if c["ok"] is None else "FAILED")
            say(f"  {c['check']}: {state}: {c.get('detail') or c.get('error') or c['skipped']}")
        self.record["preflight"] = checks
        compiled = next(c for c in checks if c["check"] == "compiled training step")
        if compiled["ok"] is False:
            self.compile_off = True
            self.record["compile_off"] = f"preflight: {compiled['error']}: every stage ran eager"
        if any(c["ok"] is False for c in checks):
            self.record["failed"].append({"stage": "preflight", "error": "; ".join(
                f"{c['check']}: {c['error']}" for c in checks if c["ok"] is False), "log": None})

    def seed(self, k: int) -> None:
        seeds = self.record["seeds"]
        estimate = seeds[-1]["total_seconds"] + 15 if seeds else FIRST_SEED_SECONDS[self.kind]
        if self.budget.fits(f"seed {k}", estimate):
            say(f"[seed {k}]")
            result = self.train(f"seed {k}", ["--training.seed", str(k)], self.out / f"seed-{k}")
            if result:
                seeds.append(result)

    def calibration(self, recipe: str) -> None:
        seeds = self.record["seeds"]
        estimate = 1.5 * seeds[0]["total_seconds"] + 15 if seeds else \
            FIRST_SEED_SECONDS[self.kind]
        if not self.budget.fits("calibration", estimate):
            return
        say("[calibration]")
        result = self.train("calibration", ["-C", recipe], self.out / "calibration")
        if result is None:
            return
        self.record["calibration"] = {"recipe": self.rc.calibration, **result}
        if seeds:  # what scripts/compare.py says of them
            cal, runs = [self.out / "calibration"], [Path(s["run_dir"]) for s in seeds]
            self.record["vs_calibration"] = {
                "seed_0": _compared(cal, runs[:1]),
                "seeds": _compared(cal, runs) if len(runs) > 1 else None}

    def ablation(self, recipe: str) -> None:
        """One seed-0 run of the default recipe changed by `recipe`, compared with seed 0."""
        seeds, name = self.record["seeds"], Path(recipe).stem
        estimate = seeds[0]["total_seconds"] + 15 if seeds else FIRST_SEED_SECONDS[self.kind]
        if not self.budget.fits(f"ablation {name}", estimate):
            return
        say(f"[ablation {name}]")
        run = self.out / f"ablation-{name}"
        result = self.train(f"ablation {name}", ["-C", recipe], run)
        if result is None:
            return
        base = next((s for s in seeds if s["seed"] == 0), None)
        self.record["ablations"].append({
            "name": name, "recipe": str(Path(recipe).relative_to(ROOT)) if Path(recipe)
            .is_relative_to(ROOT) else recipe, **result,
            "vs_seed_0": _compared([Path(base["run_dir"])], [run]) if base else None})

    def explain(self) -> None:
        seeds = self.record["seeds"]
        if not seeds:
            self.budget.skipped.append({"stage": "explain", "reason": "no seed was trained"})
            return
        if not self.budget.fits("explain", EXPLAIN_SECONDS[self.kind]):
            return
        say("[explain]")
        run = Path(seeds[0]["run_dir"])
        code, log = self.run("explain", [
            "scripts/explain.py", "--run.dir", str(run), "--data.dir", str(self.data_dir),
            "--explain.device", self.rc.device, *(["--explain.scored", "4"] if self.rc.smoke
                                                  else [])])
        if code:
            self.failed("explain", f"exit {code}: {_last_error(log)}", log)
            return
        self.record["explain"] = {**read_json(run / EXPLAIN_JSON, "explain record"),
                                  "log": str(log)}
        say(f"[explain] maps {self.record['explain']['cams_seconds']:.2f} s, scores "
            f"{self.record['explain']['scores_seconds']:.2f} s")

    def bench(self) -> None:
        """The benchmark subset with at most BENCH_SECONDS of the budget: run_all estimates
        each suite from its sizes on this device and skips (and names) those that do not fit."""
        if not self.budget.fits("bench", BENCH_MIN_SECONDS):
            return
        seconds = min(BENCH_SECONDS[self.kind], self.budget.left())
        say(f"[bench] within {seconds:.0f} s")
        suites = BENCH_SUITES[self.kind]
        extra = (["--bench.suites", suites] if suites else []) + (
            ["--bench.scale", "0.05", "--bench.tag", "smoke"] if self.rc.smoke else [])
        if self.device.type == "cuda":  # the compile-mode autotuning takes minutes: not here
            extra += ["--bench.compile_modes", "default"]
        plan = self.results / f"bench-plan{'-smoke' if self.rc.smoke else ''}-" \
                              f"{slug(self.record)}.json"
        plan.unlink(missing_ok=True)  # an earlier command's plan is not this one's
        code, log = self.run("bench", [
            "benchmarks/run_all.py", "--data.dir", str(self.data_dir), "--bench.device",
            self.rc.device, "--bench.out", str(self.results), "--bench.budget_seconds",
            f"{seconds:.0f}", *extra], limit=seconds + 30)  # a suite over its estimate stops
        ran = read_json(plan, "benchmark plan")["suites"] if plan.is_file() else []
        self.record["bench"] = {"results": str(self.results), "suites": suites or "all",
                                "budget_seconds": seconds, "plan": ran, "log": str(log)}
        if code:
            self.failed("bench", f"exit {code}: {_last_error(log)}", log)
            return
        for x in ran:
            if x["skipped"]:
                say(f"[bench] skipped {x['suite']}: needs ~{x['estimated_seconds']:.0f} s")


def reproduce(rc: ReproduceConfig, data_dir: Path, source: str) -> tuple[dict, Path, Path]:
    """Every stage that fits the budget, the record written after each; (record, json, md).
    StageFailed (exit 1) after the last stage when any failed."""
    device = resolve_device(rc.device)
    # absolute paths: explain.py and the benchmarks run from the repository root
    out, results, data_dir = Path(rc.out).resolve(), Path(rc.results).resolve(), data_dir.resolve()
    _check_ffcv()
    recipe = _checked_recipe(rc.calibration)
    ablations = [_checked_recipe(a, "ablations") for a in rc.ablations if a]
    if rc.train_args:
        parse_config(rc.train_args.split())  # a bad extra option is found now
    _check_folders(out, results, 2 if rc.smoke else rc.seeds,
                   [f"ablation-{Path(a).stem}" for a in ablations])
    r = Reproduction(rc, data_dir, results, out, device)
    tee = Tee(sys.stdout, r.log_path)
    sys.stdout = tee
    try:
        try:
            meta = r.data(source)
        except DataError as e:
            r.failed("data", str(e), None)
            r.save()
            raise StageFailed(f"the data stage failed: {e}") from None
        r.preflight()
        r.save()
        seeds = 2 if rc.smoke else rc.seeds
        r.seed(0)
        r.save()
        if rc.explain:
            r.explain()
            r.save()
        if rc.bench:
            r.bench()
            r.save()
        for k in range(1, seeds):
            r.seed(k)
            r.save()
        if recipe:
            r.calibration(recipe)
            r.save()
        for ablation in ablations:
            r.ablation(ablation)
            r.save()
        if r.record["seeds"]:
            always_wrong_page(r.record["cross_seed"]["always_wrong"], data_dir, meta["classes"],
                              {s["seed"]: s["run_dir"] for s in r.record["seeds"]},
                              out / "always-wrong.png")
        json_path, md_path = r.save()
        say(md_path.read_text())
    finally:
        sys.stdout = tee.stream
        tee.close()
    if r.record["failed"]:
        stages = ", ".join(f["stage"] for f in r.record["failed"])
        raise StageFailed(f"{len(r.record['failed'])} stage(s) failed ({stages}); each is "
                          f"recorded with its error and log in {json_path}")
    return r.record, json_path, md_path


def _compared(a: list[Path], b: list[Path]) -> dict:
    """compare.py's figures of two sides, or {"error": why} when they cannot be compared (e.g.
    a recipe that changed the test subset): recorded, and the command goes on."""
    try:
        return compare_folders(a, b)
    except UserError as e:
        say(f"comparison not made: {e}")
        return {"error": str(e), "summary": f"not compared ({e})"}


def _check_ffcv() -> None:
    """ffcv's loader and writer import here (on Python 3.12 through data/ffcv_shim.py), or one
    line says why, before anything is spent."""
    try:
        importlib.import_module("ffcv_resnet.data.loaders")  # ffcv.loader, through the shim
        importlib.import_module("ffcv.writer")
    except Exception as e:  # noqa: BLE001 (an ImportError, or a broken build's OSError)
        text = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"ffcv cannot be imported here ({type(e).__name__}: {text}); run "
                        "`python -c 'import ffcv_resnet.data.loaders'` to see why") from None


def _checked_recipe(name: str, option_name: str = "calibration") -> str:
    """A recipe's path ('' for none), checked as a config before anything runs."""
    if not name:
        return ""
    path = Path(name) if Path(name).is_file() else ROOT / name
    if not path.is_file():
        raise UserError(f"--reproduce.{option_name} {name}: no such recipe")
    parse_config(["-C", str(path)])  # a bad recipe is found now, not after the seeds
    return str(path.resolve())  # train.py runs from the repository root, not from here


def _check_folders(out: Path, results: Path, seeds: int, others: list[str] = ()) -> None:
    """Every folder this command writes can be written, and none is (inside) a run folder; the
    previous command's outputs are removed, so that nothing left from it can pass for this
    one's."""
    for folder, name in ((out, "out"), (results, "results")):
        check_output_folder(folder, f"reproduce.{name}")
    names = [f"seed-{k}" for k in range(max(seeds, 100))] + ["calibration", *others]
    names += [p.name for p in out.glob("ablation-*")]  # an earlier command's ablations too
    for name in names:
        if (out / name).exists():
            with RunFolder(out / name) as folder:  # refuses a folder of someone else's files
                folder.clear()
    (out / "always-wrong.png").unlink(missing_ok=True)


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

