"""Benchmark harness: warm up, synchronise, repeat, take the median; records with full provenance."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from ffcv_resnet.records import write_json  # noqa: E402
from ffcv_resnet.device import slug  # noqa: E402
from ffcv_resnet.timing import sync  # noqa: E402


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
