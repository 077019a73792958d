"""Training: compile, the training step (label smoothing, bf16), warm-up, and the epoch loop with
its once-per-epoch divergence check. The recipe (options, schedule, optimiser) is in recipe.py."""
from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainingFailed
from ..precision import autocast
from .average import WeightAverage
from .dynamics import Dynamics
from .recipe import TrainConfig, make_optimizer, make_schedule, peak_lr
from ..timing import Stopwatch


HEADER = f"{'epoch':>5} {'lr':>7} {'train_loss':>10} {'train_acc':>9} {'test_loss':>9} " \
         f"{'test_acc':>8} {'seconds':>7} {'img/s':>8}"


def row(h: dict) -> str:
    """One fixed-width line of the per-epoch table."""
    test = (f"{h['test_loss']:>9.4f} {h['test_accuracy']:>8.2%}" if "test_accuracy" in h
            else f"{'-':>9} {'-':>8}")
    return (f"{h['epoch']:>5} {h['lr']:>7.4f} {h['train_loss']:>10.4f} {h['train_accuracy']:>9.2%} "
            f"{test} {h['train_seconds']:>7.2f} {h['images_per_second']:>8.0f}")


def use_compile_cache(path: str) -> None:
    """Keep Inductor's caches (FX graphs, autotuning, AOT autograd) in `path` across runs."""
    root = Path(path).expanduser()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root)
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device,
                  wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> nn.Module:
    """Move the eager model to the device; return what runs it: `wrap(model)` (DDP under
    torchrun), compiled when asked, as PyTorch recommends for DDP (compile the wrapper)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        torch.set_float32_matmul_precision("high")  # TF32 for whatever runs outside autocast
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else
             torch.contiguous_format)
    runner = wrap(model)
    # static shapes: the model sees the training batch and the (padded) evaluation batch; with
    # Dynamo's automatic dynamic shapes the second size would recompile into a symbolic-batch
    # graph, slower and not the one warm-up timed. Each shape gets its own static graph instead.
    return torch.compile(runner, mode=cfg.compile_mode, dynamic=False) \
        if cfg.compile == "on" else runner


@dataclass
class Step:
    """What one training step needs besides the batch."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    cfg: TrainConfig
    average: WeightAverage | None = None  # the weight average (--training.ema), updated here
    dynamics: Dynamics | None = None  # every training image's dynamics, updated here
    last_lr: float = 0.0  # the LR the latest step used (a Python float: reading it is no sync)

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; returns (summed loss, correct count) as device tensors (no sync).
        `index`: the images' beton indices, for their dynamics (None: not recorded)."""
        x = x.contiguous(memory_format=torch.channels_last if self.cfg.channels_last
                         else torch.contiguous_format)  # the model's format (a no-op if it is)
        with autocast(x.device, self.cfg.precision):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:  # fp16: the scaler's inf check is a host sync
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.average is not None:
            self.average.step()
        if self.dynamics is not None and index is not None:
            self.dynamics.update(logits, y, index)
        return loss.detach() * len(y), (logits.argmax(1) == y).sum()


    def state_dict(self) -> dict:
        """Optimiser (momentum buffers), schedule position and scaler: what resuming needs."""
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "average": self.average.state_dict() if self.average is not None else None,
                "dynamics": self.dynamics.state_dict() if self.dynamics is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        if self.dynamics is not None and state.get("dynamics") is not None:
            self.dynamics.load_state_dict(state["dynamics"])

    def evaluated(self):
        """A context in which the model holds the weights a run evaluates (the average, when
        weights are averaged)."""
        return self.average.swapped_in() if self.average is not None else contextlib.nullcontext()


def make_step(model: nn.Module, runner: nn.Module, cfg: TrainConfig, device: torch.device,
              steps_per_epoch: int, images: int = 0) -> Step:
    """The step of the recipe `cfg`; `images`: the training beton's images, whose dynamics it
    records (0: none)."""
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    average = None if cfg.ema == "off" else WeightAverage(
        model, cfg.epochs * steps_per_epoch, cfg.ema_every, cfg.ema_rate, cfg.ema == "lookahead")
    dynamics = Dynamics(images, device) if cfg.dynamics and images else None
    return Step(runner, optimizer, make_schedule(optimizer, cfg, steps_per_epoch), scaler, cfg,
                average, dynamics)


def warm_up(model: nn.Module, step: Step, eval_fn, device: torch.device,
            batch_size: int | None = None) -> float:
    """Compile and warm up train and eval graphs on random data, then restore every state
    (`eval_fn` None: a process that does not evaluate). `batch_size`: what each training step
    takes (this process's share of the batch under torchrun; the recipe's by default).

    Returns the seconds spent, reported apart from training time.
    """
    saved = copy.deepcopy((model.state_dict(), step.state_dict()))
    bs = batch_size or step.cfg.batch_size
    x = torch.rand(bs, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,), device=device)
    with Stopwatch(device) as t:
        for _ in range(2):
            step(x, y)
        if eval_fn is not None:
            eval_fn()
    model.load_state_dict(saved[0])
    step.load_state_dict(saved[1])
    return t.seconds


def all_finite(tensors) -> torch.Tensor:
    """A device bool: every floating tensor is free of NaN and inf (no sync until read)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)


@dataclass
class Epochs:
    """What the epoch loop runs: the step, the batches it takes, their augmentation, the
    evaluation (() -> (logits, metrics)), and, under torchrun, how the processes' epoch totals
    are summed (`reduce`), so that all see the same figures and agree on stopping."""
    step: Step
    batches: object  # data.loaders.Batches: one pass per epoch
    augment: Callable  # (uint8 images, beton indices, epoch from 0) -> float batch
    evaluate: Callable[[], tuple]
    device: torch.device
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    progress: bool = False  # a bar within each epoch


def train_one_epoch(loop: Epochs, epoch: int = 0) -> dict:
    """One pass over the batches (epoch `epoch`, from 0); loss and accuracy accumulate on the
    device, one sync at the end.

    `finite` says whether the loss and every weight and buffer stayed finite: NaN propagates
    into the summed loss, so checking once per epoch costs no host sync per step.
    """
    step, device = loop.step, loop.device
    step.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    iterator = loop.batches
    if loop.progress:
        from tqdm import tqdm
        iterator = tqdm(loop.batches, total=len(loop.batches), leave=False, desc="train",
                        unit="batch")
    with Stopwatch(device) as t:
        for images, labels, index in iterator:
            loss, right = step(loop.augment(images, index, epoch), labels, index)
            loss_sum += loss
            correct += right
            seen += len(labels)
    if step.dynamics is not None:
        step.dynamics.end_epoch(loop.reduce)  # under torchrun: one sum over the processes
    weights = [p for g in step.optimizer.param_groups for p in g["params"]]
    finite = all_finite([loss_sum, *weights, *step.model.buffers()])
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(seen, device=device,
                          dtype=torch.float64), (~finite).double()])
    if loop.reduce is not None:
        totals = loop.reduce(totals)
    loss_sum, correct, seen, broken = totals.tolist()  # the epoch's one sync
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "train_seconds": t.seconds, "train_images": int(seen), "finite": broken == 0}


def fit(loop: Epochs, on_epoch=None,
        history: list[dict] | None = None) -> tuple[list[dict], torch.Tensor | None, dict]:
    """The epoch loop from the epoch after `history`: train, evaluate when due (always after the
    last epoch), report each epoch through `on_epoch(history)`.

    `loop.evaluate()` returns (logits, metrics); returns (history, last logits, last metrics).
    A NaN or inf loss, weight or test loss raises TrainingFailed naming the epoch.
    """
    step, device = loop.step, loop.device
    cfg, history = step.cfg, list(history or [])
    logits = m = None
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        h = {"epoch": epoch, **train_one_epoch(loop, epoch - 1)}
        if not h.pop("finite"):
            raise TrainingFailed(f"training diverged in epoch {epoch}: the loss or the weights "
                                 f"became NaN or inf (peak LR {peak_lr(cfg):.4g})")
        h["lr"] = step.last_lr  # what the epoch's last step used
        h["images_per_second"] = h["train_images"] / h["train_seconds"]
        logits = m = None
        if epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0):
            with Stopwatch(device) as t, step.evaluated():
                logits, m = loop.evaluate()
            if not math.isfinite(m["loss"]):
                raise TrainingFailed(f"training diverged in epoch {epoch}: the test loss is "
                                     f"{m['loss']} (peak LR {peak_lr(cfg):.4g})")
            h.update(test_loss=m["loss"], test_accuracy=m["accuracy"], eval_seconds=t.seconds)
        history.append(h)
        if on_epoch is not None:
            on_epoch(history)
    if m is None:  # resumed after the last epoch was trained: evaluate it now
        with step.evaluated():
            logits, m = loop.evaluate()
    return history, logits, m
