"""What trains, built from the config: the run's data on the device (training batches by either
path, the test split and its record) and the model, its compiled runner, step and augmentation.
Under torchrun each process builds its own, with its shard of the data, its share of the batch
and its own augmentation draws; the model is DDP-wrapped and rank 0 evaluates."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import distributed as D
from . import loop as T
from .recipe import set_bn_momentum
from ..data.augment import BatchAugment
from ..data.betons import beton_path, checked_metadata
from ..errors import UserError, say
from ..finished.evaluate import metrics, predict
from ..data.loaders import (Batches, Shard, Stream, check_order, check_subset, content_of,
                            load_all, subset_indices, train_batches)
from ..model import resnet18, summary
from ..records import TestSet


@dataclass
class RunData:
    """Everything a run reads: training batches and the test split on the device."""
    meta: dict
    batches: Batches
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,)
    index: torch.Tensor  # (N,) test-split index of each image
    test: TestSet


def check_data(cfg, w: D.World = D.World()) -> dict:
    """The betons' metadata, after checking the subsets and the order, that an epoch holds at
    least one batch (per process, when `w` has several) and that the global batch splits evenly
    over the processes: before anything is loaded or compiled."""
    data, tc = cfg.data, cfg.training
    meta = checked_metadata(Path(data.dir))
    n = data.train_subset or meta["counts"]["train"]
    check_subset(data.train_subset, meta["counts"]["train"], "--data.train_subset",
                 "the training split")
    check_subset(data.test_subset, meta["counts"]["test"], "--data.test_subset", "the test split")
    if data.loader == "ffcv":
        check_order(data.order, w.size)
    if tc.batch_size % w.size:
        raise UserError(f"--training.batch_size {tc.batch_size} is global and must divide by "
                        f"the {w.size} processes (each takes an equal share): try "
                        f"{max(w.size, tc.batch_size // w.size * w.size)}")
    if tc.batch_size > n:
        raise UserError(f"--training.batch_size {tc.batch_size} is more than the {n} training "
                        "images: an epoch would hold no batch")
    return meta


def loader_threads(workers: int, w: D.World) -> int:
    """FFCV's threads per process: --data.workers, or (0) this machine's cores shared among its
    processes (more would oversubscribe the cores: 4x slower with 2 processes on 2 cores)."""
    return workers or max(1, (os.cpu_count() or 1) // w.local_size)


def augment_seed(seed: int, rank: int) -> int:
    """Rank 0 draws from `seed` itself (as a single process); the others from distinct seeds."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def load_data(cfg, meta: dict, device: torch.device, w: D.World = D.World()) -> RunData:
    """Checked betons -> this process's training batches (either path, batch_size / w.size
    images each) and the test split on the device."""
    data, tc, data_dir = cfg.data, cfg.training, Path(cfg.data.dir)
    counts = meta["counts"]
    train_idx = subset_indices(counts["train"], data.train_subset, tc.seed)
    test_idx = subset_indices(counts["test"], data.test_subset, 0)
    stream = Stream(order=data.order, seed=tc.seed, os_cache=data.os_cache, indices=train_idx,
                    workers=loader_threads(data.workers, w), shard=Shard(w.rank, w.size))
    batches = train_batches(data.loader, beton_path(data_dir, "train"), tc.batch_size // w.size,
                            device, stream)
    images, labels = load_all(beton_path(data_dir, "test"), device, test_idx)
    index = torch.as_tensor(test_idx if test_idx is not None else range(counts["test"]),
                            device=device)
    test = TestSet(count=int(len(labels)), fingerprint=meta["source"]["fingerprint"],
                   subset=None if test_idx is None else test_idx.tolist(), tta=tc.tta,
                   class_counts=torch.bincount(labels, minlength=len(meta["classes"])).tolist(),
                   content=content_of(data_dir, meta, "test"))
    return RunData(meta, batches, images, labels, index, test)


@dataclass
class Engine:
    """What trains: the data, the eager model, the step that runs it, the augmentation."""
    data: RunData
    model: nn.Module
    step: T.Step
    augment: BatchAugment
    # () -> (logits, metrics) on the test set; under torchrun rank 0 evaluates and shares the
    # metrics (the other processes get None for the logits)
    evaluate: Callable[[], tuple[torch.Tensor | None, dict]]
    compile_seconds: float
    world: D.World


def build_engine(cfg, meta: dict, device: torch.device, log=say,
                 w: D.World = D.World()) -> Engine:
    """Data on the device, the model (DDP-wrapped under torchrun, compiled when asked, warmed
    up), step, augmentation. `cfg`: the run's settings, with the device's `auto` resolved."""
    tc = cfg.training
    T.use_compile_cache(tc.compile_cache)
    torch.manual_seed(tc.seed)  # the same initial weights in every process
    d = load_data(cfg, meta, device, w)
    model = resnet18(len(meta["classes"]), cfg.model.init)
    set_bn_momentum(model, tc.bn_momentum)
    if cfg.run.summary:
        log(summary(model))
    runner = T.prepare_model(model, tc, device, lambda m: D.wrap(m, device, w, tc.sync_bn))
    # rank 0 evaluates the eager model, compiled on its own: DDP is for training steps only
    scorer = (T.prepare_model(model, tc, device) if w.active else runner) if w.main else None
    step = T.make_step(model, runner, tc, device, len(d.batches), meta["counts"]["train"])

    def score(images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = predict(scorer, images, batch_size=tc.eval_batch_size,
                         precision=tc.precision, tta=tc.tta)
        return logits, metrics(logits, d.labels[:len(images)], len(meta["classes"]))

    def evaluate() -> tuple[torch.Tensor | None, dict]:
        logits, m = (None, None) if not w.main else score(d.images)
        return logits, D.from_main(lambda: m, w)

    # compile on one evaluation batch: predict pads its tail, so that is the only shape it sees
    compile_seconds = T.warm_up(
        model, step, (lambda: score(d.images[:tc.eval_batch_size])) if w.main else None,
        device, tc.batch_size // w.size) if tc.compile == "on" else 0.0
    # alternating flips key on beton indices with the run's seed: the same rule in every process
    augment = BatchAugment(cfg.augment, device, augment_seed(tc.seed, w.rank),
                           images=meta["counts"]["train"], flip_seed=tc.seed)
    return Engine(d, model, step, augment, evaluate, compile_seconds, w)
