"""Loader throughput, one batch size: FFCV alone, FFCV + batched augmentation, GPU-resident path,
and the usual torchvision DataLoader pipeline. Images/s over full passes, median of repeats."""
from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.baseline import UsualBatches, training_subset, usual_loader_for
from benchmarks.common import measure, table
from ffcv_resnet.data.augment import AugmentConfig, BatchAugment
from ffcv_resnet.data.loaders import FfcvBatches, ResidentBatches, Stream


def _drain(batches, augment=None) -> int:
    n, last = 0, None
    for x, y, *index in batches:  # the engine's batches also carry each image's index,
        last = augment(x, *index) if augment is not None else x  # which alternate flips read
        n += len(y)
    if last is not None:
        float(last.float().mean())  # make sure the device really did the work
    return n


def run(data_dir: Path, device: torch.device, batch_size: int, images: int, repeats: int,
        workers: int = 0) -> tuple[list[dict], str]:
    path, idx, n = training_subset(data_dir, images)
    augment = BatchAugment(AugmentConfig(), device, images=n)  # the default recipe's
    ffcv = FfcvBatches(path, batch_size, device,
                       Stream(order="random", indices=idx, workers=workers))
    resident = ResidentBatches(path, batch_size, device, Stream(indices=idx))
    usual = usual_loader_for(path, idx, batch_size, device, workers)
    cases = [
        ("ffcv", "FFCV Loader alone (uint8 batches on the device)", lambda: _drain(ffcv)),
        ("ffcv+augment", "FFCV Loader + batched augmentation on the device",
         lambda: _drain(ffcv, augment)),
        ("resident+augment", "GPU-resident shuffle/slice + batched augmentation",
         lambda: _drain(resident, augment)),
        ("torchvision", "torchvision-style Dataset + CPU transforms + DataLoader workers",
         lambda: _drain(UsualBatches(usual, device))),
    ]
    records = []
    for name, what, fn in cases:
        m = measure(fn, device, warmup=1, repeats=repeats)
        records.append({"benchmark": "loader", "name": name, "timed": what,
                        "batch_size": batch_size, "images_per_pass": m["items"],
                        "seconds": m["seconds"], "images_per_second": m["items_per_second"]})
        print(f"  loader {name:>17}: {m['items_per_second']:>10,.0f} images/s", flush=True)
    base = records[-1]["images_per_second"]
    md = table(["data path", "images/s", "x torchvision"],
               [[r["name"], r["images_per_second"], f"{r['images_per_second'] / base:.1f}x"]
                for r in records])
    return records, md
