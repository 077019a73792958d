"""The usual pipeline, for comparison: a torchvision-style in-memory CIFAR-10 Dataset with CPU
transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) through a torch
DataLoader with worker processes, feeding an fp32, eager, contiguous model (the seed's way)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ffcv_resnet.data.betons import beton_path, verified
from ffcv_resnet.data.loaders import load_all, subset_indices
from ffcv_resnet.data.cifar import MEAN, STD

WORKER_START = "forkserver"  # how the baseline's DataLoader workers start (see usual_loader)


class InMemoryCifar(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: PIL image from a uint8 array, transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def usual_transform() -> T.Compose:
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


def usual_loader(images: np.ndarray, labels: np.ndarray, batch_size: int,
                 device: torch.device, workers: int = 0) -> DataLoader:
    """Shuffled, drop_last, worker processes (default: up to 8), pinned memory on CUDA.

    The workers start from a fork server, not a fork of this process: the benchmarks run FFCV
    in the same process, and a fork taken while its numba threads (one per core) are alive can
    leave a worker holding a lock no thread will release (ffcv issue #292: DataLoader workers
    segfaulting next to FFCV). The dataset travels to each worker once (persistent workers)."""
    workers = workers or min(8, os.cpu_count() or 1)
    return DataLoader(InMemoryCifar(images, labels, usual_transform()), batch_size=batch_size,
                      shuffle=True, drop_last=True, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=True,
                      multiprocessing_context=WORKER_START)


def training_subset(data_dir: Path, images: int) -> tuple[Path, np.ndarray | None, int]:
    """The train beton, a fixed subset of `images` of it (None: all) for a benchmark, and how
    many images the beton holds (what alternating flips key on)."""
    path = beton_path(data_dir, "train")
    n = verified(path)
    return path, subset_indices(n, images) if images < n else None, n


def usual_loader_for(path: Path, indices, batch_size: int, device: torch.device,
                     workers: int = 0) -> DataLoader:
    """The usual pipeline over the same images as the engine's paths (held in host memory)."""
    images, labels = load_all(path, torch.device("cpu"), indices=indices)
    return usual_loader(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), batch_size, device,
                        workers)


class UsualBatches:
    """Normalised float batches on the device, as the seed's training loop sees them; one pass
    per iteration, like the engine's loaders."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class Unnormalised(torch.nn.Module):
    """Our model takes [0, 1] images; the usual pipeline has normalised already, so undo that
    inside (a negligible elementwise op) to run the same network on both pipelines."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.std + self.mean)
