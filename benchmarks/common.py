"""Benchmark harness: warm up, synchronise, repeat, take the median; records with full provenance."""
from __future__ import annotations

import datetime
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from ffcv_resnet.records import write_json  # noqa: E402
from ffcv_resnet.timing import device_name, sync  # noqa: E402


def device_info(device: torch.device) -> dict:
    """What a figure was measured on: device name, torch and CUDA versions, date, git sha."""
    name = device_name(device)
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ffcv_resnet",
                                "benchmarks/*.py", "scripts"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        sha = sha + ("-dirty" if dirty else "") if sha else "unknown"
    except OSError:
        sha = "unknown"
    return {"device": name, "device_type": device.type, "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "date": datetime.date.today().isoformat(), "git_sha": sha}


def slug(info: dict) -> str:
    """A file-name-safe short name of the device."""
    base = "cpu" if info["device_type"] == "cpu" else info["device"]
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")


def measure(fn: Callable[[], int], device: torch.device, warmup: int = 1,
            repeats: int = 3) -> dict:
    """Run `fn` (returns items processed) warmup + repeats times, synchronised; median rate."""
    for _ in range(warmup):
        fn()
    seconds, items = [], 0
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        items = fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    med = statistics.median(seconds)
    return {"items": items, "seconds": seconds, "median_seconds": med,
            "items_per_second": items / med if med > 0 else None}


def write_records(out_dir: Path, suite: str, info: dict, records: list[dict]) -> Path:
    """One JSON file per suite and device: every record carries the device's provenance."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}-{slug(info)}.json"
    full = [{"suite": suite, **info, **r} for r in records]
    write_json(path, full)  # strict JSON: a NaN measurement is an error, not a record
    return path


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table."""
    fmt = [[(f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}") if isinstance(v, float) else str(v)
            for v in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in fmt])
