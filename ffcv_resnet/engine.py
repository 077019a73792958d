"""What trains, built from the config: the run's data on the device (training batches by either
path, the test split and its record) and the model, its compiled runner, step and augmentation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import train as T
from .augment import BatchAugment
from .betons import beton_path, checked_metadata
from .errors import UserError, say
from .evaluate import metrics, predict
from .loaders import Batches, load_all, subset_indices, train_batches
from .model import resnet18, summary
from .records import TestSet


@dataclass
class RunData:
    """Everything a run reads: training batches and the test split on the device."""
    meta: dict
    batches: Batches
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,)
    index: torch.Tensor  # (N,) test-split index of each image
    test: TestSet


def check_data(cfg: dict) -> dict:
    """The betons' metadata, after checking that an epoch holds at least one batch."""
    data, tc = cfg["data"], cfg["training"]
    meta = checked_metadata(Path(data.dir))
    n = data.train_subset or meta["counts"]["train"]
    if data.train_subset > meta["counts"]["train"]:
        raise UserError(f"--data.train_subset {data.train_subset}: the training split has "
                        f"only {meta['counts']['train']} images")
    if data.test_subset > meta["counts"]["test"]:
        raise UserError(f"--data.test_subset {data.test_subset}: the test split has only "
                        f"{meta['counts']['test']} images")
    if tc.batch_size > n:
        raise UserError(f"--training.batch_size {tc.batch_size} is more than the {n} training "
                        "images: an epoch would hold no batch")
    return meta


def load_data(cfg: dict, meta: dict, device: torch.device) -> RunData:
    """Checked betons -> training batches (either path) and the test split on the device."""
    data, tc, data_dir = cfg["data"], cfg["training"], Path(cfg["data"].dir)
    counts = meta["counts"]
    train_idx = subset_indices(counts["train"], data.train_subset, tc.seed)
    test_idx = subset_indices(counts["test"], data.test_subset, 0)
    batches = train_batches(data.loader, beton_path(data_dir, "train"), tc.batch_size, device,
                            order=data.order, seed=tc.seed, os_cache=data.os_cache,
                            indices=train_idx, workers=data.workers)
    images, labels = load_all(beton_path(data_dir, "test"), device, test_idx)
    index = torch.as_tensor(test_idx if test_idx is not None else range(counts["test"]),
                            device=device)
    test = TestSet(count=int(len(labels)), fingerprint=meta["source"]["fingerprint"],
                   subset=None if test_idx is None else test_idx.tolist(), tta=tc.tta,
                   class_counts=torch.bincount(labels, minlength=len(meta["classes"])).tolist())
    return RunData(meta, batches, images, labels, index, test)


@dataclass
class Engine:
    """What trains: the data, the eager model, the step that runs it, the augmentation."""
    data: RunData
    model: nn.Module
    step: T.Step
    augment: BatchAugment
    evaluate: Callable[..., tuple[torch.Tensor, dict]]  # () -> (logits, metrics) on the test set
    compile_seconds: float


def build_engine(cfg: dict, meta: dict, device: torch.device, log=say) -> Engine:
    """Data on the device, the model (compiled when asked and warmed up), step, augmentation."""
    tc = cfg["training"]
    T.use_compile_cache(tc.compile_cache)
    torch.manual_seed(tc.seed)
    d = load_data(cfg, meta, device)
    model = resnet18(len(meta["classes"]))
    if cfg["run"].summary:
        log(summary(model))
    runner = T.prepare_model(model, tc, device)
    step = T.make_step(model, runner, tc, device, len(d.batches))

    def evaluate(images=d.images):
        logits = predict(runner, images, batch_size=tc.eval_batch_size,
                         precision=tc.precision, tta=tc.tta)
        return logits, metrics(logits, d.labels[:len(images)], len(meta["classes"]))

    # compile on one evaluation batch: predict pads its tail, so that is the only shape it sees
    compile_seconds = T.warm_up(model, step, lambda: evaluate(d.images[:tc.eval_batch_size]),
                                device) if tc.compile == "on" else 0.0
    return Engine(d, model, step, BatchAugment(cfg["augment"], device, tc.seed), evaluate,
                  compile_seconds)
