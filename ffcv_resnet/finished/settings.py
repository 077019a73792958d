"""A run's settings as typed records: every option train.py takes (what config.yaml holds), each
section's checks, which of them a resumed run may set anew (RESUMABLE), and the LR/batch rule
that gives --training.lr its meaning. Training builds on them; explain, compare and predict read
a finished run's config.yaml through them without loading the engine. No torch is imported
here: train.py checks its options before loading it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..config import (ConfigError, as_dict, flatten, option, parse, require, require_range,
                      resumable)
from ..data.options import AugmentConfig, DataConfig
from ..device import check_device, device_option
from ..model_options import ModelConfig
from ..precision import AUTO_PRECISION, PRECISIONS, resolve_precision
from ..run_folder import RunConfig, read_config

if TYPE_CHECKING:
    import torch

MAX_EPOCHS = 10_000  # more is a typo (1e20), not a run
AVERAGES = ("off", "ema", "lookahead")  # weight averaging (training/average.py)
TTA = ("none", "flip", "flip_translate")  # test-time augmentation levels (evaluate.py)

BASE_BATCH = 512  # --training.lr is the peak LR at this batch size; others scale linearly


@dataclass(frozen=True)
class TrainConfig:
    """Training: recipe, precision, compilation"""
    epochs: int = option(20, "training epochs")
    batch_size: int = option(512, "training batch size, global: with torchrun each of the N "
                             "processes takes batch_size/N of every step (it must divide by N), "
                             "so 1 and N processes share one recipe and schedule")
    lr: float = option(0.4, f"peak learning rate at batch {BASE_BATCH}; the LR used is scaled "
                       f"linearly with the batch size (lr x batch_size / {BASE_BATCH})")
    lr_start: float = option(0.0, "where the warm-up starts, as a fraction of the peak: the "
                             "factor rises linearly from it at step 0 to 1 at the peak step, "
                             "and step k (from 1) takes the factor at k, so the first step "
                             "takes lr_start + (1 - lr_start) / peak_steps")
    peak_epoch: float = option(4.0, "epoch at which the triangular LR schedule peaks (from 0 "
                               "to the peak, then down to 0 at the last step); a peak past the "
                               "middle of the run is moved to the middle")
    momentum: float = option(0.9, "SGD Nesterov momentum")
    weight_decay: float = option(5e-4, "weight decay (on what --training.decay says)")
    decay: str = option("weights", "what weight decay applies to: weights (of convolutions and "
                        "the linear layer; not BatchNorm's weights and biases nor the linear "
                        "bias) or all (every parameter)", ("weights", "all"))
    label_smoothing: float = option(0.1, "label smoothing of the training loss")
    bn_bias_lr_scale: float = option(1.0, "BatchNorm biases train at this multiple of the LR, "
                                     "with their weight decay divided by it (so the decay's "
                                     "pull per step is unchanged); airbench uses 64")
    bn_momentum: float = option(0.1, "BatchNorm's running-statistics momentum (PyTorch's "
                                "sense: the weight of each new batch; airbench's 0.6 is 0.4 "
                                "here)")
    ema: str = option("off", "weight averaging, evaluated and saved as the run's model: ema (an "
                      "exponential moving average of the weights and BatchNorm statistics, "
                      "airbench94's warm-started decay rate^every (step/total)^3); lookahead (the "
                      "same, written back into the weights at each update); off", AVERAGES)
    ema_every: int = option(5, "steps between two updates of the weight average")
    dynamics: bool = option(True, "record every training image's dynamics (AUM, epochs right, "
                            "forgetting events, mean and spread of p(label)) from the logits each "
                            "step computes anyway, into train_dynamics.npz; explain's "
                            "suspect-labels page reads it")
    ema_rate: float = option(0.95, "the weight average's decay per step (before the "
                             "(step/total)^3 warm start)")
    precision: str = option("auto", AUTO_PRECISION, PRECISIONS)
    channels_last: bool = option(True, "channels_last model and inputs")
    compile: str = option("auto", "torch.compile (auto: on CUDA only)", ("auto", "on", "off"))
    compile_mode: str = option("default", "torch.compile mode (the benchmark compares them)",
                               ("default", "reduce-overhead", "max-autotune",
                                "max-autotune-no-cudagraphs"))
    compile_cache: str = option("~/.cache/ffcv_resnet/inductor",
                                "torch.compile's on-disk cache, kept between runs", resumable=True)
    tta: str = option("flip", "test-time augmentation at evaluation: none; flip (image and "
                      "mirror); flip_translate (also 1-pixel shifts, as the published recipe)",
                      TTA)
    eval_every: int = option(1, "evaluate every N epochs (0: only after the last)")
    eval_batch_size: int = option(1000, "evaluation batch size")
    sync_bn: bool = option(False, "with torchrun: BatchNorm statistics over the whole global "
                           "batch (SyncBatchNorm, CUDA only). Off: each process normalises over "
                           "its share, as the recipe was tuned, without an all-reduce per layer")
    seed: int = option(0, "seed of weights, data order and augmentation")
    device: str = device_option(resumable=True)

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "epochs", 1, MAX_EPOCHS)
        for name in ("batch_size", "eval_batch_size"):
            require_range(prefix, self, name, 1)
        require_range(prefix, self, "lr", 0, low_open=True)
        require(math.isfinite(peak_lr(self)), f"{prefix}.lr", self.lr,
                f"a finite LR once scaled to batch {self.batch_size}")
        require_range(prefix, self, "peak_epoch", 0, low_open=True)
        require_range(prefix, self, "lr_start", 0, 1)
        require_range(prefix, self, "momentum", 0, 1, low_open=True, high_open=True)  # Nesterov
        require_range(prefix, self, "weight_decay", 0)
        require_range(prefix, self, "label_smoothing", 0, 1, high_open=True)
        require_range(prefix, self, "bn_bias_lr_scale", 0, 1e4, low_open=True)
        require_range(prefix, self, "bn_momentum", 0, 1)
        require_range(prefix, self, "ema_every", 1)
        require_range(prefix, self, "ema_rate", 0, 1)
        require_range(prefix, self, "eval_every", 0)
        require_range(prefix, self, "seed", 0, 2**31 - 1)
        check_device(prefix, self.device)
        require(bool(self.compile_cache.strip()), f"{prefix}.compile_cache", self.compile_cache,
                "a folder")


def peak_lr(cfg: TrainConfig) -> float:
    """The peak LR the optimiser uses: --training.lr scaled linearly from batch BASE_BATCH."""
    return cfg.lr * cfg.batch_size / BASE_BATCH


@dataclass(frozen=True)
class TrainSettings:
    """scripts/train.py's options."""
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    training: TrainConfig
    run: RunConfig


RESUMABLE = resumable(TrainSettings)  # what a resumed run may set anew (each option says)


def resolved(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Turn 'auto' settings into what this device gets."""
    cuda = device.type == "cuda"
    return dataclasses.replace(
        cfg, precision=resolve_precision(cfg.precision, device),
        compile=("on" if cuda else "off") if cfg.compile == "auto" else cfg.compile)


def recipe_of(config: dict) -> dict:
    """{"section.name": value} of what a run computes (RESUMABLE left out)."""
    return {k: v for k, v in flatten(config).items() if k not in RESUMABLE}


def parse_config(argv: Sequence[str] | None = None, description: str = "") -> TrainSettings:
    """Command line -> checked settings; with --run.resume, the run's own config.yaml is the
    base and an option that would change what it computes is an error. A fresh run's options
    are checked without torch (it is loaded only to resolve a resumed run's 'auto')."""
    cfg = parse(TrainSettings, argv, description)
    if not cfg.run.resume:
        return cfg
    from ..device import resolve_device
    stored = flatten(read_config(Path(cfg.run.dir)))
    # how the run was started (e.g. --run.overwrite true, as `make run` does) is not a setting
    # the resumed process inherits
    base = {k: v for k, v in stored.items() if k not in ("run.overwrite", "run.resume")}
    cfg = parse(TrainSettings, argv, description, base=base)
    device = resolve_device(cfg.training.device)  # compare 'auto' as this device resolves it
    now = flatten(as_dict(dataclasses.replace(cfg, training=resolved(cfg.training, device))))
    # the stored values as this version reads them (an old `flip: true` is `random` now)
    then = flatten(as_dict(parse(TrainSettings, [], description, base=base)))
    for key in sorted(set(stored) - RESUMABLE):
        if key in now and now[key] != then.get(key, stored[key]):
            raise ConfigError(f"--{key} {now[key]!r} differs from the resumed run's "
                              f"{stored[key]!r}: a resumed run keeps its recipe")
    return cfg
