"""What CIFAR-10 is: its classes, splits and batch files, the Split type and its checks, the size
limits every reader enforces before allocating, and bounded reading of tar members.

The data readers form a straight line: cifar -> pickled, imagefolder -> sources -> betons.
"""
from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel mean and std of the training images, in [0, 1]
STD = (0.2470, 0.2435, 0.2616)
IMAGE_BYTES = 3 * 32 * 32
MAX_BATCH_IMAGES = 10_000  # every official batch file holds exactly this many
MAX_BATCH_FILE_BYTES = 40 << 20  # 10,000 x 3,072 pixel bytes plus labels and names: ~31 MB
MAX_IMAGE_FILE_BYTES = 64 << 10  # one 32x32 image: ~3 KB raw, far less than this in any format
MAX_SPLIT_IMAGES = 100_000  # twice CIFAR-10's training split


@dataclass
class Split:
    """One split: images (N, 32, 32, 3) uint8 RGB and labels (N,) int64 in 0..9."""
    images: np.ndarray
    labels: np.ndarray


def check_split(split: Split, where: str) -> Split:
    """Matching counts, at least one image, labels in 0..9; else a DataError naming `where`."""
    if len(split.labels) != len(split.images):
        raise DataError(f"{where}: {len(split.images)} images but {len(split.labels)} labels")
    if len(split.images) == 0:
        raise DataError(f"{where}: empty split")
    bad = (split.labels < 0) | (split.labels >= len(CLASSES))
    if bad.any():
        raise DataError(f"{where}: label {int(split.labels[bad][0])} out of range 0..9")
    return split


def concat(parts: list[Split], where: str) -> Split:
    return check_split(Split(np.concatenate([p.images for p in parts]),
                             np.concatenate([p.labels for p in parts])), where)


def tar_members(path: Path, wanted: Callable[[str], bool] = lambda name: True,
                max_bytes: int | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each wanted regular file in a .tar/.tar.gz, streamed, never extracted.

    A member larger than `max_bytes` is refused before it is read; others are not read at all.
    """
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isdir() or not wanted(member.name):
                    continue
                if not member.isfile():
                    raise DataError(f"{path}:{member.name}: a link or special file, not an "
                                    "image (only regular files are read)")
                if max_bytes is not None and member.size > max_bytes:
                    raise DataError(f"{path}:{member.name}: {member.size} bytes, more than any "
                                    f"CIFAR-10 file ({max_bytes} at most)")
                yield member.name, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{path}: truncated or corrupt archive ({e})") from None


def tar_names(path: Path) -> Iterator[str]:
    """Names of the regular files in a .tar/.tar.gz (their contents are not read)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{path}: truncated or corrupt archive ({e})") from None
