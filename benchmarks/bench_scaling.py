"""Data-parallel scaling: scripts/train.py as one process and under torchrun with N, on the same
subset, global batch and recipe; training images/s of the last epoch, speed-up and efficiency.
On CUDA N is every visible GPU (nothing to measure with one); on the CPU, 2 processes of one
thread each against one process with every core: the cost of gloo's gradient all-reduce."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import ROOT, table
from ffcv_resnet.errors import UserError


def process_counts(device: torch.device) -> list[int]:
    """[1, N] to compare; [] when the device offers nothing to scale over."""
    if device.type == "cuda":
        n = torch.cuda.device_count()
        return [1, n] if n > 1 else []
    return [1, 2]


def _train(n: int, data_dir: Path, device: torch.device, args: list[str], run_dir: str) -> dict:
    launcher = [sys.executable] if n == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    r = subprocess.run([*launcher, str(ROOT / "scripts" / "train.py"), "--data.dir",
                        str(data_dir), "--run.dir", run_dir, "--training.device", device.type,
                        *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise UserError(f"train.py with {n} process(es) failed in the scaling benchmark: "
                        f"{r.stderr.strip().splitlines()[-1:]}")
    history = [json.loads(line) for line in Path(run_dir, "history.jsonl").read_text().splitlines()]
    m = json.loads(Path(run_dir, "metrics.json").read_text())
    last = history[-1]
    return {"processes": n, "images_per_second": last["images_per_second"],
            "epoch_seconds": last["train_seconds"], "train_images": last["train_images"],
            "compile": m["compile"], "precision": m["precision"],
            "threads_per_process": torch.get_num_threads() if n == 1 or device.type == "cuda"
            else 1}  # torchrun gives each process OMP_NUM_THREADS=1


def run(data_dir: Path, device: torch.device, batch_size: int, images: int) -> tuple[list[dict], str]:
    """Two epochs at each process count; the second epoch's rate is the figure."""
    counts = process_counts(device)
    if not counts:
        return [], (f"One {device.type} device: no scaling to measure (run it where "
                    "`torch.cuda.device_count()` > 1).")
    args = ["--training.epochs", "2", "--training.batch_size", str(batch_size),
            "--data.train_subset", str(images), "--data.test_subset", str(2 * batch_size),
            "--training.eval_every", "0", "--run.progress", "off"]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            rec = _train(n, data_dir, device, args, f"{tmp}/p{n}")
            records.append({"benchmark": "scaling", "name": f"{n} process(es)", **rec,
                            "timed": "scripts/train.py (torchrun above 1 process), 2 epochs on "
                                     f"a {images}-image subset, global batch {batch_size}; the "
                                     "second epoch's synchronised training time"})
            print(f"  scaling {n} process(es): {rec['images_per_second']:,.0f} img/s", flush=True)
    base = records[0]["images_per_second"]
    for r in records:
        r["speedup"] = r["images_per_second"] / base
        r["efficiency"] = r["speedup"] / r["processes"]
    md = table(["processes", "threads each", "img/s", "epoch s", "speed-up", "efficiency"],
               [[r["processes"], r["threads_per_process"], r["images_per_second"],
                 r["epoch_seconds"], r["speedup"], r["efficiency"]] for r in records])
    return records, md + (f"\n\nOne run per row, not a median: `train.py` for 2 epochs on "
                          f"{images} images, the second epoch's rate; FFCV threads shared "
                          "among a machine's processes.")
