"""The data options (--data.*), each script taking only those it uses: where the betons live
(every script), where they come from (prepare_data.py, reproduce.py, the benchmarks), how
training batches reach the device (train.py); and the augmentation's (--augment.*). A strict
parser then refuses an option that would do nothing. No torch here: a script checks its
options before loading it."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import option, require, require_range


def _dir():
    return option("data", "folder of train.beton, test.beton and cifar10.json", resumable=True)


def _source():
    return option("", "CIFAR-10 source: cifar-10-python.tar.gz, cifar-10-batches-py/, an image "
                  "folder or its .tar/.tar.gz; empty: the source the betons were built from "
                  "(or, with no betons yet, the official archive, downloaded)")


def _workers():
    return option(0, "CPU threads for writing and loading (0: all cores; under torchrun, "
                  "shared among the processes of a machine)", resumable=True)


class _Checked:
    """The checks every data section shares: a folder named, and (where the section has them)
    the threads within this machine's cores."""

    def validate(self, prefix: str) -> None:
        require(bool(self.dir.strip()), f"{prefix}.dir", self.dir, "a folder")
        if hasattr(self, "workers"):
            cores = os.cpu_count() or 1
            require(0 <= self.workers <= cores, f"{prefix}.workers", self.workers,
                    f"0 (all cores) to {cores}, this machine's cores")


@dataclass(frozen=True)
class DataDir(_Checked):
    """Data: where the betons live"""
    dir: str = _dir()


@dataclass(frozen=True)
class DataSource(_Checked):
    """Data: where the betons live and where they come from"""
    dir: str = _dir()
    source: str = _source()


@dataclass(frozen=True)
class BenchData(_Checked):
    """Data: where the betons live, where they come from (the prepare suite) and the loaders'
    threads"""
    dir: str = _dir()
    source: str = option("", "CIFAR-10 source the prepare suite converts (empty: that suite is "
                         "left out)")
    workers: int = _workers()


@dataclass(frozen=True)
class PrepareData(_Checked):
    """Data: where the betons go and where they come from"""
    dir: str = _dir()
    source: str = _source()
    force: bool = option(False, "rebuild the betons even when they are up to date (from "
                         "--data.source, or the source they were built from)")
    workers: int = _workers()


@dataclass(frozen=True)
class DataConfig(_Checked):
    """Data: where the betons live and how training batches reach the device"""
    dir: str = _dir()
    workers: int = _workers()
    loader: str = option("ffcv", "training data path: streamed by FFCV, or resident in device "
                         "memory", ("ffcv", "resident"))
    order: str = option("random", "FFCV training order", ("random", "quasi_random"))
    os_cache: bool = option(True, "let FFCV read the beton through the OS page cache",
                            resumable=True)
    train_subset: int = option(0, "train on a fixed random subset of this many images (0: all)")
    test_subset: int = option(0, "evaluate on a fixed random subset of this many (0: all)")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        for name in ("train_subset", "test_subset"):
            require_range(prefix, self, name, 0)


@dataclass(frozen=True)
class PrepareSettings:
    """scripts/prepare_data.py's options."""
    data: PrepareData


ORDERS = ("crop_flip_cutout", "flip_cutout_translate")  # the order of the three operations
FLIPS = ("random", "alternate", "off")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation: batched, on the device"""
    pad: int = option(4, "random crop of the image reflect-padded by this many pixels (0: off)")
    flip: str = option("random", "horizontal flip: random (each image, each epoch, with "
                       "probability 1/2); alternate (at random in epoch 0, then each image "
                       "exactly in the epochs it was not flipped in the one before); off. "
                       "true/false still read as random/off", FLIPS,
                       aliases={"true": "random", "false": "off"})
    cutout: int = option(8, "side of the cutout square (0: off)")
    order: str = option("crop_flip_cutout", "crop_flip_cutout: crop, flip, then cut out of the "
                        "cropped image; flip_cutout_translate (the published fast ResNet-18 "
                        "script): flip, cut out, then crop the whole cut-out image, so the square "
                        "moves with the image and can be mirrored at a border", ORDERS)

    def __post_init__(self):
        if isinstance(self.flip, bool):  # the option's old type, from Python callers
            object.__setattr__(self, "flip", "random" if self.flip else "off")

    def validate(self, prefix: str) -> None:
        require(self.flip in FLIPS, f"{prefix}.flip", self.flip, "one of " + "|".join(FLIPS))
        require_range(prefix, self, "pad", 0, 31)  # reflect padding needs pad < image side
        require_range(prefix, self, "cutout", 0, 32)
