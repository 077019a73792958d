"""Preflight: the device and the paths a reproduction needs, checked in about a minute before any
stage is spent on them, in a process of its own (scripts/preflight.py: a native crash or a hang
ends it alone, within its limit). Each check is recorded with pass or fail and its one-line
error (or why it was skipped), written after every check; a failed compile makes the later
stages run eager. The training step is compiled as seed 0's into the runs' compile cache, so
seed 0 finds its training graph there."""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import option
from ..data.betons import beton_path
from ..data.options import DataDir
from ..device import check_device, device_name, device_option
from ..io import atomic_write_bytes
from ..precision import autocast
from ..timing import Stopwatch


@dataclass(frozen=True)
class PreflightConfig:
    """Preflight: the device and paths a reproduction needs"""
    out: str = option("", "JSON file the checks are written to, after each one")
    train_args: str = option("", "the training runs' options: the step is compiled as seed 0's "
                             "(its --training.compile_cache included)")
    smoke: bool = option(False, "a small step batch (the CPU smoke mode)")
    device: str = device_option()

    def validate(self, prefix: str) -> None:
        check_device(prefix, self.device)


@dataclass(frozen=True)
class PreflightSettings:
    """scripts/preflight.py's options."""
    data: DataDir
    preflight: PreflightConfig


def _one_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {text[:200]}"


def _check(name: str, fn: Callable[[], str]) -> dict:
    """Run one check: {check, ok, seconds, detail | error}; a string raised by SkipCheck skips."""
    start = time.perf_counter()
    try:
        detail = fn()
        return {"check": name, "ok": True, "seconds": time.perf_counter() - start,
                "detail": detail}
    except SkipCheck as e:
        return {"check": name, "ok": None, "skipped": str(e)}
    except Exception as e:  # noqa: BLE001 (recorded, never raised: the stages go on)
        return {"check": name, "ok": False, "seconds": time.perf_counter() - start,
                "error": _one_line(e)}


class SkipCheck(Exception):
    """A check that does not apply on this device (the reason is recorded)."""


def _device(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{device_name(device)}, {ram:.1f} GiB of memory"


def _matmul(device: torch.device) -> str:
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(1024, 1024, device=device, generator=g)
    b = torch.randn(1024, 1024, device=device, generator=g)
    with autocast(device, "bf16"):
        low = (a @ b).float()
    err = float((low - a @ b).norm() / (a @ b).norm())
    if not err < 2e-2:
        raise RuntimeError(f"bf16 matmul off by {err:.3g} (relative)")
    return f"relative error {err:.2e}"


def _step(device: torch.device, train_args: list[str], batch: int | None,
          compile_on: bool) -> str:
    """The training step as seed 0 builds it (its recipe and compile cache, compiled when asked)
    at the recipe's batch (or `batch`)."""
    import dataclasses
    from ..model import resnet18
    from ..training.loop import make_step, prepare_model, use_compile_cache
    from ..finished.settings import resolved
    from ..training.recipe import set_bn_momentum
    from ..finished.settings import parse_config
    cfg = parse_config(["--run.dir", "preflight", *train_args])
    tc = resolved(dataclasses.replace(cfg.training, compile="on" if compile_on else "off",
                                      batch_size=batch or cfg.training.batch_size), device)
    use_compile_cache(tc.compile_cache)
    model = resnet18(10, cfg.model.init)
    set_bn_momentum(model, tc.bn_momentum)
    runner = prepare_model(model, tc, device)
    step = make_step(model, runner, tc, device, steps_per_epoch=4)
    x = torch.rand(tc.batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (tc.batch_size,), device=device)
    with Stopwatch(device) as t:  # synchronised: the step's work, not its launch
        loss, _ = step(x, y)
    first = t.seconds
    loss, _ = step(x, y)
    if not torch.isfinite(loss):
        raise RuntimeError("the step's loss is NaN or inf")
    return (f"batch {tc.batch_size}, {tc.precision}, compile {tc.compile}: first step "
            f"{first:.1f} s, loss {float(loss) / tc.batch_size:.3f}")


def _loader(kind: str, data_dir: Path, device: torch.device, batch: int) -> str:
    from ..data.loaders import train_batches
    batches = train_batches(kind, beton_path(data_dir, "train"), batch, device)
    epoch = iter(batches)
    try:
        images = next(epoch).images
    finally:
        epoch.close()  # one batch is enough: closing the pass ends FFCV's epoch thread
    ok = images.device.type == device.type and images.dtype == torch.uint8
    shape = tuple(images.shape)
    if not ok:
        raise RuntimeError(f"a batch arrived as {images.dtype} on {images.device}")
    return f"{shape} uint8 on {device.type}, {len(batches)} batches an epoch"


def _group(device: torch.device) -> str:
    """A one-process process group: NCCL on CUDA (gloo on the CPU), one all-reduce."""
    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        if t.sum().item() != 4:
            raise RuntimeError("all-reduce gave a wrong sum")
    finally:
        dist.destroy_process_group()
    return f"{backend}: one all-reduce"


def preflight(device: torch.device, data_dir: Path, train_args: list[str], smoke: bool = False,
              write: Callable[[list[dict]], None] = lambda checks: None) -> list[dict]:
    """Every check, in order, each passed to `write` with those before it; the loader checks
    need the betons (the data stage comes first)."""
    cuda = device.type == "cuda"
    step_batch = 32 if smoke or not cuda else None  # the CPU: a step of 512 takes seconds
    checks: list[dict] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        checks.append(_check(name, fn))
        write(checks)

    def compiled() -> str:
        if not cuda:
            raise SkipCheck("compile is off on the CPU (--training.compile auto)")
        return _step(device, train_args, step_batch, True)

    def nccl() -> str:
        if not cuda:
            raise SkipCheck("NCCL needs CUDA")
        return _group(device)
    check("device", lambda: _device(device))
    check("bf16 matmul", lambda: _matmul(device))
    check("compiled training step", compiled)
    check("eager training step", lambda: _step(device, train_args, step_batch, False))
    for kind in ("ffcv", "resident"):
        check(f"{kind} loader batch", lambda kind=kind: _loader(kind, data_dir, device,
                                                                step_batch or 512))
    check("1-process NCCL group", nccl)
    if not cuda:
        check("1-process gloo group", lambda: _group(device))
    return checks


def write_checks(path: Path, checks: list[dict]) -> None:
    """The checks so far, as JSON (atomically: a crash leaves the last complete list)."""
    atomic_write_bytes(Path(path), json.dumps(checks, indent=1).encode())
