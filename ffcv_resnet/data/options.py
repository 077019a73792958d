"""The data options (--data.*): where the betons live, where they come from, how training
batches reach the device."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import option, require, require_range


@dataclass(frozen=True)
class DataConfig:
    """Data: where the betons live and how training batches reach the device"""
    dir: str = option("data", "folder of train.beton, test.beton and cifar10.json",
                      resumable=True)
    source: str = option("", "CIFAR-10 source: cifar-10-python.tar.gz, cifar-10-batches-py/, an "
                         "image folder or its .tar/.tar.gz; empty: download the official archive")
    force: bool = option(False, "rebuild the betons even when they are up to date")
    workers: int = option(0, "CPU threads for writing and loading (0: all cores; under "
                          "torchrun, shared among the processes of a machine)", resumable=True)
    loader: str = option("ffcv", "training data path: streamed by FFCV, or resident in device "
                         "memory", ("ffcv", "resident"))
    order: str = option("random", "FFCV training order", ("random", "quasi_random"))
    os_cache: bool = option(True, "let FFCV read the beton through the OS page cache",
                            resumable=True)
    train_subset: int = option(0, "train on a fixed random subset of this many images (0: all)")
    test_subset: int = option(0, "evaluate on a fixed random subset of this many (0: all)")

    def validate(self, prefix: str) -> None:
        require(bool(self.dir.strip()), f"{prefix}.dir", self.dir, "a folder")
        for name in ("train_subset", "test_subset"):
            require_range(prefix, self, name, 0)
        cores = os.cpu_count() or 1
        require(0 <= self.workers <= cores, f"{prefix}.workers", self.workers,
                f"0 (all cores) to {cores}, this machine's cores")


@dataclass(frozen=True)
class PrepareSettings:
    """scripts/prepare_data.py's options."""
    data: DataConfig
