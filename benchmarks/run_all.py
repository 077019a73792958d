"""The benchmark suite in one command: loader, Grad-CAM, training-step ablation, end-to-end epochs,
cold vs warm start, data-parallel scaling. Sizes adapt to the device; JSON records and a markdown table land in
benchmarks/results/."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import (SUITES, bench_gradcam, bench_loader, bench_scaling,  # noqa: E402
                        bench_train)
from benchmarks.common import RESULTS, ROOT, table, write_records  # noqa: E402
from benchmarks.bench_gradcam import package_missing  # noqa: E402
from benchmarks.estimates import Asked, estimate, probe, suite_repeats  # noqa: E402
from ffcv_resnet.config import option, parse, require_range  # noqa: E402
from ffcv_resnet.data.betons import beton_path, verified  # noqa: E402
from ffcv_resnet.data.options import BenchData  # noqa: E402
from ffcv_resnet.device import check_device, device_option, provenance, resolve_device, slug  # noqa: E402
from ffcv_resnet.errors import UserError, cli  # noqa: E402
from ffcv_resnet.io import atomic_write_bytes  # noqa: E402
from ffcv_resnet.records import write_json  # noqa: E402

SIZES = {  # (cpu, cuda)
    "batch_size": (64, 512), "loader_images": (4096, 50_000), "epoch_images": (512, 50_000),
    "gradcam_images": (64, 600), "gradcam_single": (8, 100), "steps": (2, 20), "repeats": (2, 3),
}


@dataclass(frozen=True)
class BenchConfig:
    """Benchmarks"""
    suites: str = option(",".join(SUITES), "comma-separated subset of " + ",".join(SUITES) +
                         " (prepare runs only when --data.source is given)")
    device: str = device_option()
    compile_modes: str = option("auto", "compile modes for the step ablation (auto: none on the "
                                "CPU; default,max-autotune-no-cudagraphs,reduce-overhead on CUDA)")
    scale: float = option(1.0, "multiply the device's default image counts and steps by this")
    startup_compile: str = option("on", "torch.compile in the cold/warm start-up runs",
                                  ("on", "off"))
    batch_size: int = option(0, "batch size for every suite (0: 64 on the CPU, 512 on CUDA)")
    tag: str = option("", "suffix for the result files (e.g. a second run on the same device)")
    budget_seconds: float = option(0.0, "skip (and name in the records) each suite whose "
                                   "estimate (benchmarks/estimates.py) does not fit in what is "
                                   "left of this many seconds; 0: run every suite chosen")
    out: str = option(str(RESULTS), "folder for the JSON records and the markdown table")

    def validate(self, prefix: str) -> None:
        check_device(prefix, self.device)
        require_range(prefix, self, "scale", 0, low_open=True)
        require_range(prefix, self, "budget_seconds", 0)
        require_range(prefix, self, "batch_size", 0)


@dataclass(frozen=True)
class BenchSettings:
    """benchmarks/run_all.py's options."""
    data: BenchData
    bench: BenchConfig


def sizes(device: torch.device, scale: float) -> dict:
    k = int(device.type == "cuda")
    out = {name: v[k] for name, v in SIZES.items()}
    for name in ("loader_images", "epoch_images", "gradcam_images", "gradcam_single", "steps"):
        out[name] = max(1, int(out[name] * scale))
    return out


def prepare_times(source: str) -> tuple[list[dict], str]:
    """Converting `source` to betons from scratch, then the rerun that finds them up to date:
    in-process, and as a user runs it (scripts/prepare_data.py, a whole process, 3 times)."""
    import subprocess
    from ffcv_resnet.data.convert import prepare
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("first run", "rerun"):
            start = time.perf_counter()
            meta = prepare(Path(tmp), source, log=lambda *_: None)
            seconds = time.perf_counter() - start
            records.append({"benchmark": "prepare", "name": name, "seconds": seconds,
                            "source_kind": meta["source"]["kind"], "counts": meta["counts"],
                            "timed": "ffcv_resnet.data.convert.prepare in-process: read + check the "
                                     "source, write both betons (first run); the up-to-date "
                                     "check with both SHA-256s (rerun)"})
            print(f"  prepare {name}: {seconds:.2f} s", flush=True)
        for args, name in (([], "rerun, whole process, no source"),
                           (["--data.source", source], "rerun, whole process, same source")):
            walls = []
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run([sys.executable, str(ROOT / "scripts/prepare_data.py"),
                                "--data.dir", tmp, *args], check=True, capture_output=True)
                walls.append(time.perf_counter() - start)
            records.append({"benchmark": "prepare", "name": name, "seconds": min(walls),
                            "all_seconds": walls, "source_kind": meta["source"]["kind"],
                            "counts": meta["counts"],
                            "timed": "scripts/prepare_data.py as a user runs it, interpreter "
                                     "start-up included; the fastest of 3"})
            print(f"  prepare {name}: {min(walls):.2f} s", flush=True)
    md = table(["prepare_data", "seconds"], [[r["name"], r["seconds"]] for r in records])
    return records, md + f"\n\nSource: {records[0]['source_kind']}, {records[0]['counts']}."


def startup(data_dir: Path, device: torch.device, s: dict,
            compile: str) -> tuple[list[dict], str]:
    """Cold start (empty compile cache) vs warm start (the same cache again) of scripts/train.py."""
    import subprocess
    records = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as runs:
        for name in ("cold", "warm"):
            args = [sys.executable, str(ROOT / "scripts/train.py"), "--data.dir", str(data_dir),
                    "--run.dir", f"{runs}/{name}", "--training.epochs", "1",
                    "--training.compile_cache", cache, "--training.device", str(device),
                    "--training.batch_size", str(s["batch_size"]), "--run.progress", "off",
                    "--training.compile", compile, "--training.eval_batch_size",
                    str(2 * s["batch_size"]), "--data.train_subset", str(4 * s["batch_size"]),
                    "--data.test_subset", str(2 * s["batch_size"])]
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode:
                raise UserError(f"train.py failed in the start-up benchmark: {r.stderr[-500:]}")
            m = json.loads(Path(f"{runs}/{name}/metrics.json").read_text())
            records.append({"benchmark": "startup", "name": name, "compile": m["compile"],
                            "compile_seconds": m["compile_seconds"],
                            "startup_seconds": m["startup_seconds"],
                            "total_seconds": m["total_seconds"],
                            "timed": "scripts/train.py, 1 epoch of 4 batches, a fresh process "
                                     "each; warm-up (compile) and the script's own total"})
            print(f"  startup {name}: warm-up {m['compile_seconds']:.1f} s, first step after "
                  f"{m['startup_seconds']:.1f} s, total {m['total_seconds']:.1f} s", flush=True)
    md = table(["start", "compile", "warm-up s", "first step after s", "run total s"],
               [[r["name"], r["compile"], r["compile_seconds"], r["startup_seconds"],
                 r["total_seconds"]] for r in records])
    return records, md


@cli
def main() -> None:
    cfg = parse(BenchSettings, description=__doc__)
    b, data_dir = cfg.bench, Path(cfg.data.dir)
    chosen = [x.strip() for x in b.suites.split(",") if x.strip()]
    if not chosen or set(chosen) - set(SUITES):
        raise UserError(f"--bench.suites: choose from {','.join(SUITES)}")
    device = resolve_device(b.device)
    s = sizes(device, b.scale)
    s["batch_size"] = b.batch_size or s["batch_size"]
    out_dir = Path(b.out)
    modes = [m for m in (b.compile_modes if b.compile_modes != "auto" else
                         ("default,max-autotune-no-cudagraphs,reduce-overhead"
                          if device.type == "cuda" else "")).split(",") if m]
    info = provenance(device)
    print(f"benchmarks on {info['device']} (torch {info['torch']}), sizes {s}")
    if "prepare" in chosen and not cfg.data.source:
        chosen.remove("prepare")  # needs a source to convert
        if not chosen:
            raise UserError("--bench.suites prepare needs --data.source (the source to convert)")
    runners = {
        "prepare": lambda: prepare_times(cfg.data.source),
        "loader": lambda: bench_loader.run(data_dir, device, s["batch_size"], s["loader_images"],
                                           s["repeats"], cfg.data.workers),
        "gradcam": lambda: bench_gradcam.run(device, s["gradcam_images"], s["gradcam_single"],
                                             s["repeats"]),
        "train": lambda: bench_train.ablation(device, s["batch_size"], s["steps"], s["repeats"],
                                              modes),
        "dynamics": lambda: bench_train.dynamics_cost(device, s["batch_size"], s["steps"],
                                                      suite_repeats("dynamics", s)),
        "epoch": lambda: bench_train.end_to_end(data_dir, device, s["batch_size"],
                                                s["epoch_images"], s["repeats"],
                                                cfg.data.workers),
        "startup": lambda: startup(data_dir, device, s, b.startup_compile),
        "scaling": lambda: bench_scaling.run(data_dir, device, s["batch_size"],
                                             s["epoch_images"]),
    }
    def prov(suite: str) -> str:
        n = suite_repeats(suite, s)
        return (f"{info['device']}, torch {info['torch']}"
                f"{', CUDA ' + info['cuda'] if info['cuda'] else ''}, {info['date']}, git "
                f"{info['git_sha']}; batch size {s['batch_size']}; "
                f"{'one run per row' if n is None else f'median of {n} repeats after warm-up'}; "
                f"`{' '.join(['benchmarks/run_all.py', *sys.argv[1:]])}`")
    tag = f"-{b.tag}" if b.tag else ""
    if set(chosen) & {"loader", "epoch", "startup", "scaling"}:  # before any work
        verified(beton_path(data_dir, "train"))
    start, plan = time.perf_counter(), []  # the budget counts the probe too
    out_dir.mkdir(parents=True, exist_ok=True)
    d = probe(device, s["batch_size"])
    print(f"probe: an eager fp32 training step costs {d.step * 1e3:.3f} ms per image")

    def save_plan() -> None:  # after every suite: a killed run still says what it did
        write_json(out_dir / f"bench-plan{tag}-{slug(info)}.json", {
            **info, "command": " ".join(["benchmarks/run_all.py", *sys.argv[1:]]),
            "budget_seconds": b.budget_seconds, "sizes": s, "compile_modes": modes,
            "probe_step_seconds_per_image": d.step, "cores": d.cores, "suites": plan})

    package = package_missing() is None
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    for suite in chosen:
        est = estimate(suite, d, s, Asked(tuple(modes), b.startup_compile, package, gpus))
        left = b.budget_seconds - (time.perf_counter() - start)
        if b.budget_seconds and est > left:
            print(f"[{suite}] skipped: needs ~{est:.0f} s, {max(left, 0):.0f} s of the "
                  f"{b.budget_seconds:.0f} s budget left", flush=True)
            plan.append({"suite": suite, "estimated_seconds": est, "skipped": True,
                         "seconds_left": max(left, 0.0)})
            save_plan()
            continue
        print(f"[{suite}] (estimate ~{est:.0f} s)", flush=True)
        t = time.perf_counter()
        entry = {"suite": suite, "estimated_seconds": est, "skipped": False, "running": True}
        plan.append(entry)  # a run stopped in this suite still names it
        save_plan()
        records, md = runners[suite]()
        path = write_records(out_dir, suite + tag, info, records)
        atomic_write_bytes(path.with_suffix(".md"),
                           f"### {suite}\n\n{md}\n\nMeasured on {prov(suite)}. Records: "
                           f"`{path.name}`\n".encode())
        del entry["running"]
        entry["seconds"] = time.perf_counter() - t
        save_plan()
    out = out_dir / f"{slug(info)}{tag}.md"
    write_device_page(out_dir, slug(info), tag, info["device"])
    print(f"-> {out}")


def write_device_page(out_dir: Path, device_slug: str, tag: str, device: str) -> Path:
    """<device>.md: every suite's latest table for that device, in suite order. The heading
    names every device the tables were measured on (one slug, "cpu", covers every CPU model:
    each table names its own)."""
    parts = [(out_dir / f"{suite}{tag}-{device_slug}.md") for suite in SUITES]
    body = "\n".join(p.read_text() for p in parts if p.is_file())
    devices = [device]
    for p in parts:
        records = p.with_suffix(".json")
        for r in (json.loads(records.read_text()) if records.is_file() else []):
            if r.get("device") and r["device"] not in devices:
                devices.append(r["device"])
    plan_path = out_dir / f"bench-plan{tag}-{device_slug}.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    skipped = [f"{x['suite']} (needed ~{x['estimated_seconds']:.0f} s, "
               f"{x['seconds_left']:.0f} s of {plan['budget_seconds']:.0f} s left)"
               for x in plan.get("suites", []) if x["skipped"]]
    if skipped:
        body += (f"\n\nSkipped by the latest run's time budget ({plan['date']}, git "
                 f"{plan['git_sha']}): {', '.join(skipped)}; a table above of a skipped suite "
                 "is an earlier run's, with its own date.\n")
    out = out_dir / f"{device_slug}{tag}.md"
    atomic_write_bytes(out, f"## Benchmarks on {', '.join(sorted(devices))}\n\n{body}".encode())
    return out

if __name__ == "__main__":
    main()
