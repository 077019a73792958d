"""What each benchmark suite will cost, from its own sizes, scaled to the device, so that a run
with a time budget (`--bench.budget_seconds`, as reproduce's one GPU call gives it) skips, and
names, the suites that would not fit instead of being killed in the middle of one.

An estimate counts the work a suite does (training-step images, decoded images, compiles,
processes started) and prices it with one figure measured on the device at the start (`probe`:
seconds per image of an eager fp32 training step at the suite's batch size) and a few constants
below. The constants are assumptions, not measurements: the compile seconds are guesses for this
ResNet-18 on an H100 (no GPU has run this project yet), the decode costs come from this
project's CPU records, process and worker start-up from a CPU run at `--bench.scale 0.05` (its
suites then took 0.9x to 1.8x their estimates). Every run records each suite's estimate beside
the seconds it really took (bench-plan-<device>.json), so that the first record of a device can
correct them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

# seconds of one cold compile of the training step (evaluation's graph included), by mode
COMPILE = {"cuda": {"default": 60.0, "reduce-overhead": 80.0,
                    "max-autotune-no-cudagraphs": 300.0, "max-autotune": 330.0},
           "cpu": {"default": 120.0, "reduce-overhead": 120.0,
                   "max-autotune-no-cudagraphs": 400.0, "max-autotune": 400.0}}
WARM_COMPILE = 0.3  # a compile that finds its graphs in the on-disk cache, as a share of cold
PROCESS = {"cuda": 12.0, "cpu": 12.0}  # a fresh Python process: imports, CUDA context, data
FFCV_DECODE = 8e-6  # seconds per 32x32 image and core: FFCV's loader (CPU loader record)
PIL_TRANSFORM = 2e-4  # seconds per image and worker: the torchvision pipeline's CPU transforms
WORKER_START = 3.0  # seconds to start one DataLoader worker, once the fork server is up
GRADCAM_PACKAGE_ROAD = 0.4  # seconds per map of the grad-cam package's ROAD (scipy, per image)
FASTER = {"bf16": 0.6, "compiled": 0.35}  # a step's cost against eager fp32 on CUDA (on the
# CPU nothing compiles: bf16 and "compiled" both cost 0.6, see Device.cost)


@dataclass(frozen=True)
class Device:
    """What the estimates are scaled by."""
    kind: str  # "cuda" or "cpu"
    step: float  # measured: seconds per image of an eager fp32 training step
    cores: int
    batch_size: int

    @property
    def workers(self) -> int:
        return min(8, self.cores)

    @property
    def workers_start(self) -> float:
        """The torchvision baseline's workers: a fork server (a fresh process), then each."""
        return PROCESS[self.kind] + self.workers * WORKER_START

    def cost(self, images: float, how: str = "fp32") -> float:
        """Seconds of `images` training-step images: fp32 eager, bf16 eager or compiled."""
        if how == "fp32":
            return images * self.step
        if self.kind != "cuda":  # bf16 is a little faster on this CPU; nothing compiles there
            return images * self.step * FASTER["bf16"]
        return images * self.step * FASTER[how]


def probe(device: torch.device, batch_size: int) -> Device:
    """Times two eager fp32 training steps at `batch_size` after one warm-up (a second or two
    on a GPU, a few on a CPU)."""
    from benchmarks.bench_train import _step
    from ffcv_resnet.timing import sync
    from ffcv_resnet.training.recipe import TrainConfig
    step = _step(TrainConfig(batch_size=batch_size, precision="fp32", channels_last=False,
                             compile="off"), device)
    x = torch.rand(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    step(x, y)
    sync(device)
    start = time.perf_counter()
    for _ in range(2):
        step(x, y)
    sync(device)
    seconds = (time.perf_counter() - start) / (2 * batch_size)
    return Device("cuda" if device.type == "cuda" else "cpu", seconds, os.cpu_count() or 1,
                  batch_size)


@dataclass(frozen=True)
class Asked:
    """What a run of the benchmarks asks besides the sizes: the step ablation's compile modes,
    whether the start-up suite compiles, whether the grad-cam package's rows run, the GPUs."""
    modes: tuple[str, ...] = ("default",)
    startup_compile: str = "on"
    package: bool = True
    gpus: int = 1


ONE_RUN_PER_ROW = ("prepare", "startup", "scaling")  # suites that time each row once


def suite_repeats(suite: str, s: dict) -> int | None:
    """How many timed repeats a suite takes (its table gives their median); None for a suite
    that times each row once. The dynamics' difference is small against the machine's drift,
    so it takes at least 10 turns each."""
    if suite in ONE_RUN_PER_ROW:
        return None
    return max(10, s["repeats"]) if suite == "dynamics" else s["repeats"]


def estimate(suite: str, d: Device, s: dict, asked: Asked = Asked()) -> float:
    """Seconds `suite` (one of benchmarks.SUITES) should take with the sizes `s` (run_all's
    `sizes`) and what the run asks."""
    modes, startup_compile, package, gpus = (asked.modes, asked.startup_compile, asked.package,
                                             asked.gpus)
    passes, b = 1 + s["repeats"], d.batch_size
    compile_cold = COMPILE[d.kind]
    if suite == "prepare":  # two conversions of 60,000 images, six whole-process reruns
        return 2 * 60_000 * 4 * FFCV_DECODE * 8 / d.cores + 6 * PROCESS[d.kind]
    if suite == "loader":
        n = passes * s["loader_images"]
        return (n * (2 * FFCV_DECODE * 8 / d.cores + PIL_TRANSFORM / d.workers) +
                d.cost(n, "compiled") * 0.05 + d.workers_start)
    if suite == "gradcam":
        g, single = s["gradcam_images"], s["gradcam_single"]
        ref = 2.0 if package else 0.0
        road = max(2, min(2 * single, 64))
        maps = passes * g * (6 * (1 + ref) + 2 * 2 * 8)  # six methods; the family in 2 precisions
        scorecam = passes * single * 90 * (1 + ref)  # 256 masked forwards per image
        one_at_a_time = passes * single * (1 + 0.005 / d.step / 2)
        explain_pass = 2 * g * 30
        return (d.cost(maps + scorecam + one_at_a_time + explain_pass + 40 * road) +
                (road * (GRADCAM_PACKAGE_ROAD + 18 * 0.02) if package else 0.0))
    if suite == "train":
        timed = passes * s["steps"] * b
        eager = d.cost(2 * timed) + d.cost(2 * timed, "bf16")
        compiled = sum(compile_cold.get(m, compile_cold["max-autotune"]) +
                       d.cost(timed, "compiled") for m in modes)
        flop_count = b * 0.04 / d.cores  # FlopCounterMode: one CPU forward and backward
        return eager + compiled + flop_count
    if suite == "dynamics":  # two steps (with, without), warm-up and compile included
        timed = 2 * (suite_repeats(suite, s) * s["steps"] + 2) * b
        return d.cost(timed, "compiled") + (2 * COMPILE[d.kind]["default"]
                                            if d.kind == "cuda" else 0.0)
    if suite == "epoch":
        n = passes * s["epoch_images"]
        usual = 2 * max(d.cost(n), n * PIL_TRANSFORM / d.workers)
        engine = 2 * d.cost(n, "compiled")
        compiles = (1 + 2 * WARM_COMPILE) * compile_cold["default"] if d.kind == "cuda" else 0
        return usual + engine + compiles + d.workers_start
    if suite == "startup":
        compiles = (1 + WARM_COMPILE) * compile_cold["default"] if startup_compile == "on" else 0
        return 2 * PROCESS[d.kind] + compiles + d.cost(2 * 6 * b)
    if suite == "scaling":
        if d.kind == "cuda" and gpus < 2:
            return 0.0  # one GPU: nothing to measure
        return 2 * PROCESS[d.kind] + 3 * d.cost(2 * s["epoch_images"], "compiled")
    raise ValueError(f"no estimate for suite {suite!r}")
