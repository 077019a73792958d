"""Training: SGD-Nesterov with a triangular LR schedule, label smoothing, bf16, compile; the epoch loop."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import option
from .evaluate import auto_precision, autocast
from .timing import Stopwatch


@dataclass
class TrainConfig:
    """Training: recipe, precision, compilation"""
    epochs: int = option(20, "training epochs")
    batch_size: int = option(512, "training batch size")
    lr: float = option(0.4, "peak learning rate")
    peak_epoch: float = option(4.0, "epoch at which the triangular LR schedule peaks")
    momentum: float = option(0.9, "SGD Nesterov momentum")
    weight_decay: float = option(5e-4, "weight decay (not on BatchNorm weights and biases)")
    label_smoothing: float = option(0.1, "label smoothing of the training loss")
    precision: str = option("auto", "auto: bf16 on CUDA and on CPUs with native bf16, else fp32",
                            ("auto", "bf16", "fp16", "fp32"))
    channels_last: bool = option(True, "channels_last model and inputs")
    compile: str = option("auto", "torch.compile (auto: on CUDA only)", ("auto", "on", "off"))
    compile_mode: str = option("default", "torch.compile mode (the benchmark compares them)",
                               ("default", "reduce-overhead", "max-autotune",
                                "max-autotune-no-cudagraphs"))
    compile_cache: str = option("~/.cache/ffcv_resnet/inductor",
                                "torch.compile's on-disk cache, kept between runs")
    tta: bool = option(True, "flip test-time augmentation at evaluation")
    eval_every: int = option(1, "evaluate every N epochs (0: only after the last)")
    eval_batch_size: int = option(1000, "evaluation batch size")
    seed: int = option(0, "seed of weights, data order and augmentation")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")


def resolved(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Turn 'auto' settings into what this device gets."""
    cuda = device.type == "cuda"
    return dataclasses.replace(
        cfg, precision=auto_precision(device) if cfg.precision == "auto" else cfg.precision,
        compile=("on" if cuda else "off") if cfg.compile == "auto" else cfg.compile)


def use_compile_cache(path: str) -> None:
    """Keep Inductor's caches (FX graphs, autotuning, AOT autograd) in `path` across runs."""
    root = Path(path).expanduser()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root)
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """Move the eager model to the device; return what runs it (compiled, or the model itself)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        torch.set_float32_matmul_precision("high")  # TF32 for whatever runs outside autocast
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else
             torch.contiguous_format)
    return torch.compile(model, mode=cfg.compile_mode) if cfg.compile == "on" else model


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """SGD with Nesterov momentum; no weight decay on BatchNorm weights and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                           fused=device.type == "cuda")


def make_schedule(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Triangular schedule: linear up to `peak_epoch`, linear down to zero at the end."""
    total, peak = cfg.epochs * steps_per_epoch, cfg.peak_epoch * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: float(np.interp(step + 1, [0, peak, total], [0, 1, 0])))


@dataclass
class Step:
    """What one training step needs besides the batch."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    cfg: TrainConfig

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; returns (summed loss, correct count) as device tensors (no sync)."""
        x = x.contiguous(memory_format=torch.channels_last if self.cfg.channels_last
                         else torch.contiguous_format)  # the model's format (a no-op if it is)
        with autocast(x.device, self.cfg.precision):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # fp16: the scaler's inf check is a host sync
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach() * len(y), (logits.argmax(1) == y).sum()


def make_step(model: nn.Module, runner: nn.Module, cfg: TrainConfig, device: torch.device,
              steps_per_epoch: int) -> Step:
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    return Step(runner, optimizer, make_schedule(optimizer, cfg, steps_per_epoch), scaler, cfg)


def warm_up(model: nn.Module, step: Step, eval_fn, device: torch.device) -> float:
    """Compile and warm up train and eval graphs on random data, then restore every state.

    Returns the seconds spent, reported apart from training time.
    """
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(step.optimizer.state_dict()),
             copy.deepcopy(step.scheduler.state_dict()),
             step.scaler.state_dict() if step.scaler is not None else None)
    bs = step.cfg.batch_size
    x = torch.rand(bs, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,), device=device)
    with Stopwatch(device) as t:
        for _ in range(2):
            step(x, y)
        eval_fn()
    model.load_state_dict(saved[0])
    step.optimizer.load_state_dict(saved[1])
    step.scheduler.load_state_dict(saved[2])
    if step.scaler is not None:
        step.scaler.load_state_dict(saved[3])
    return t.seconds


def train_one_epoch(step: Step, batches, augment, device: torch.device,
                    progress: bool = False) -> dict:
    """One pass over `batches`; loss and accuracy accumulate on the device, one sync at the end."""
    step.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    iterator = batches
    if progress:
        from tqdm import tqdm
        iterator = tqdm(batches, total=len(batches), leave=False, desc="train", unit="batch")
    with Stopwatch(device) as t:
        for images, labels in iterator:
            loss, right = step(augment(images), labels)
            loss_sum += loss
            correct += right
            seen += len(labels)
    loss_sum, correct = torch.stack([loss_sum, correct.float()]).tolist()  # the epoch's one sync
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "train_seconds": t.seconds, "train_images": seen}


def fit(step: Step, batches, augment, evaluate, device: torch.device, progress: bool = False,
        on_epoch=None) -> tuple[list[dict], torch.Tensor, dict]:
    """The epoch loop: train, evaluate when due (always after the last epoch), report each epoch.

    `evaluate()` returns (logits, metrics); returns (history, last logits, last metrics).
    """
    cfg, history = step.cfg, []
    for epoch in range(1, cfg.epochs + 1):
        h = {"epoch": epoch, **train_one_epoch(step, batches, augment, device, progress)}
        h["lr"] = step.scheduler.get_last_lr()[0]
        h["images_per_second"] = h["train_images"] / h["train_seconds"]
        if epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0):
            with Stopwatch(device) as t:
                logits, m = evaluate()
            h.update(test_loss=m["loss"], test_accuracy=m["accuracy"], eval_seconds=t.seconds)
        history.append(h)
        if on_epoch is not None:
            on_epoch(history)
    return history, logits, m
