"""Training speed: a per-technique ablation of the step (precision, memory format, compile mode)
and end-to-end epochs per data path, against the usual pipeline on the same device."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from benchmarks.baseline import Unnormalised, UsualBatches, training_subset, usual_loader_for
from benchmarks.common import measure, table
from ffcv_resnet.finished.settings import resolved
from ffcv_resnet.training import recipe as R
from ffcv_resnet.training import loop as T
from ffcv_resnet.data.augment import AugmentConfig, BatchAugment
from ffcv_resnet.data.loaders import FfcvBatches, ResidentBatches, Stream
from ffcv_resnet.model import resnet18

# Dense bf16 tensor-core peaks from the vendor's data sheets (FLOP/s), by device-name fragment.
BF16_PEAK = {"H100 SXM": 989.4e12, "H100 80GB HBM3": 989.4e12, "H100 PCIe": 756.0e12,
             "H100": 989.4e12, "H200": 989.4e12, "A100": 312.0e12}
FLOPS_20_EPOCHS = 3.33e15  # 20 x 50,000 images x (forward + backward) of this ResNet-18


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "no peak figure for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK.items():
        if key in name:
            return value, f"{key} dense bf16 tensor-core peak, {value / 1e12:.0f} TFLOP/s"
    return None, f"no peak figure known for {name}"


def step_flops(batch_size: int) -> float:
    """FLOPs of one training step (forward + backward), counted by torch on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode
    model = resnet18()
    x = torch.rand(batch_size, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return float(counter.get_total_flops())


def _step(cfg: R.TrainConfig, device: torch.device, wrap=None):
    model = resnet18()
    runner = T.prepare_model(wrap(model) if wrap else model, cfg, device)
    return T.make_step(model, runner, cfg, device, steps_per_epoch=10**6)


def ablation(device: torch.device, batch_size: int, steps: int, repeats: int,
             modes: list[str]) -> tuple[list[dict], str]:
    """Images/s of the bare training step on device-resident random data, one change at a time."""
    base = R.TrainConfig(batch_size=batch_size, precision="fp32", channels_last=False,
                         compile="off")
    variants = [("fp32, contiguous, eager", base),
                ("bf16, contiguous, eager", dataclasses.replace(base, precision="bf16")),
                ("fp32, channels_last, eager", dataclasses.replace(base, channels_last=True)),
                ("bf16, channels_last, eager",
                 dataclasses.replace(base, precision="bf16", channels_last=True))]
    variants += [(f"bf16, channels_last, compile {m}",
                  dataclasses.replace(base, precision="bf16", channels_last=True, compile="on",
                                      compile_mode=m)) for m in modes]
    flops = step_flops(batch_size)
    peak, peak_desc = peak_flops(device)
    records = []
    for name, cfg in variants:
        step = _step(cfg, device)
        mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
        x = torch.rand(batch_size, 3, 32, 32, device=device).contiguous(memory_format=mf)
        y = torch.randint(0, 10, (batch_size,), device=device)

        def run_steps():
            for _ in range(steps):
                step(x, y)
            return steps * batch_size

        m = measure(run_steps, device, warmup=1, repeats=repeats)
        ms = 1000 * m["median_seconds"] / steps
        achieved = flops / (ms / 1000)
        records.append({"benchmark": "train_step", "name": name, "batch_size": batch_size,
                        "precision": cfg.precision, "channels_last": cfg.channels_last,
                        "compile": cfg.compile_mode if cfg.compile == "on" else "eager",
                        "images_per_second": m["items_per_second"], "ms_per_step": ms,
                        "step_flops": flops, "achieved_flops_per_second": achieved,
                        "fraction_of_peak": achieved / peak if peak else None, "peak": peak_desc,
                        "seconds": m["seconds"],
                        "timed": f"{steps} SGD steps (forward, loss, backward, update) on "
                                 "device-resident random data, after a warm-up pass"})
        print(f"  step {name:>44}: {m['items_per_second']:>9,.0f} img/s {ms:8.1f} ms/step",
              flush=True)
    md = table(["training step", "images/s", "ms/step", "TFLOP/s", "of peak"],
               [[r["name"], r["images_per_second"], r["ms_per_step"],
                 f"{r['achieved_flops_per_second'] / 1e12:.2f}",
                 f"{r['fraction_of_peak']:.1%}" if r["fraction_of_peak"] else "n/a"]
                for r in records])
    return records, md + f"\n\nPeak used: {peak_desc}; step FLOPs counted by torch's " \
                          f"FlopCounterMode ({flops / batch_size / 1e9:.2f} GFLOP per image)."


def _epoch(step, batches, prepare) -> int:
    n = 0
    for images, labels, *index in batches:  # the engine's batches also carry each image's
        step(prepare(images, *index), labels)  # index, which alternate flips read
        n += len(labels)
    return n


def end_to_end(data_dir: Path, device: torch.device, batch_size: int, images: int,
               repeats: int, workers: int = 0) -> tuple[list[dict], str]:
    """Seconds per training epoch for each data path with the engine, and for the usual way."""
    path, idx, n = training_subset(data_dir, images)
    engine = resolved(R.TrainConfig(batch_size=batch_size), device)
    usual_cfg = dataclasses.replace(engine, precision="fp32", channels_last=False, compile="off")
    augment = BatchAugment(AugmentConfig(), device, images=n)  # the default recipe's
    usual = usual_loader_for(path, idx, batch_size, device, workers)
    paths = [
        ("usual: torchvision DataLoader, fp32, eager", usual_cfg, lambda: UsualBatches(usual,
                                                                                        device),
         lambda x, *_: x.contiguous(), Unnormalised),
        ("torchvision DataLoader + engine", engine, lambda: UsualBatches(usual, device),
         lambda x, *_: x.contiguous(memory_format=torch.channels_last), Unnormalised),
        ("FFCV + GPU augmentation + engine", engine,
         lambda: FfcvBatches(path, batch_size, device,
                             Stream(order="random", indices=idx, workers=workers)), augment,
         None),
        ("GPU-resident + GPU augmentation + engine", engine,
         lambda: ResidentBatches(path, batch_size, device, Stream(indices=idx)), augment, None),
    ]
    records = []
    for name, cfg, make_batches, prepare, wrap in paths:
        step, batches = _step(cfg, device, wrap), make_batches()
        m = measure(lambda: _epoch(step, batches, prepare), device, warmup=1, repeats=repeats)
        records.append({"benchmark": "epoch", "name": name, "batch_size": batch_size,
                        "precision": cfg.precision, "compile": cfg.compile,
                        "images_per_epoch": m["items"], "seconds": m["seconds"],
                        "epoch_seconds": m["median_seconds"],
                        "images_per_second": m["items_per_second"],
                        "timed": "one training epoch: loading, augmentation, forward, backward, "
                                 "update; after a warm-up epoch (compilation excluded)"})
        print(f"  epoch {name:>44}: {m['median_seconds']:8.2f} s "
              f"({m['items_per_second']:,.0f} img/s)", flush=True)
    base = records[0]["epoch_seconds"]
    md = table(["end-to-end epoch", "s/epoch", "images/s", "speed-up"],
               [[r["name"], r["epoch_seconds"], r["images_per_second"],
                 f"{base / r['epoch_seconds']:.1f}x"] for r in records])
    return records, md



def dynamics_cost(device: torch.device, batch_size: int, steps: int,
                  repeats: int) -> tuple[list[dict], str]:
    """What recording every training image's dynamics costs the default step on this device:
    the same step with and without it, timed in turns (without, with, without, ...) so that
    drift in the machine's speed falls on both alike; the median of each."""
    import statistics
    import time
    from ffcv_resnet.timing import sync
    cfg = resolved(R.TrainConfig(batch_size=batch_size), device)  # the default step here
    images = 50_000  # the training beton's images, whose tensors the step indexes
    x = torch.rand(batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    index = torch.randperm(images, device=device)[:batch_size]  # distinct, as in an epoch
    steps_of = {}
    for name, n in (("without dynamics", 0), ("with dynamics", images)):
        torch.manual_seed(0)
        model = resnet18()
        runner = T.prepare_model(model, cfg, device)
        steps_of[name] = T.make_step(model, runner, cfg, device, 10**6, images=n)
        for _ in range(2):  # warm-up
            steps_of[name](x, y, index)
    seconds = {name: [] for name in steps_of}
    for _ in range(repeats):
        for name, step in steps_of.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step(x, y, index)
            sync(device)
            seconds[name].append((time.perf_counter() - start) / steps)
    base = statistics.median(seconds["without dynamics"])
    records = [{"benchmark": "dynamics", "name": name, "batch_size": batch_size,
                "precision": cfg.precision, "compile": cfg.compile,
                "ms_per_step": 1000 * statistics.median(s), "all_ms_per_step":
                [1000 * v for v in s], "images_per_second": batch_size / statistics.median(s),
                "extra_fraction": statistics.median(s) / base - 1,
                "timed": f"{steps} default training steps on device-resident random data, with "
                         "and without recording every training image's dynamics, in turns "
                         f"({repeats} each), after a warm-up; the median"}
               for name, s in seconds.items()]
    md = table(["training step", "ms/step", "images/s", "extra"],
               [[r["name"], r["ms_per_step"], r["images_per_second"],
                 f"{100 * r['extra_fraction']:+.2f}%"] for r in records])
    return records, md + (f"\n\nThe default step ({cfg.precision}, compile {cfg.compile}) at "
                          f"batch {batch_size}; recording updates six sums of the batch's "
                          "images by index on the device (no host sync).")
