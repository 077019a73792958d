"""Loaders: betons -> uint8 (B, 3, 32, 32) channels_last batches plus int64 labels on the device.

Two training paths behind one interface (an iterable of batches with a length, one pass per epoch):
`FfcvBatches` streams from the beton through FFCV's Loader; `ResidentBatches` holds the whole
split in device memory and shuffles and slices it there, with no per-epoch CPU work.
Under torchrun both give each process its own shard of every epoch's order (`Shard`). Every
batch carries the beton index of each image (what per-image rules, such as alternating flips,
and per-image records key on).
"""
from __future__ import annotations

import functools
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
import torch

from .betons import beton_path, split_content, verified
from .ffcv_shim import distutils_for_ffcv
from ..errors import DataError

if TYPE_CHECKING:
    from ffcv.loader import Loader


@functools.cache
def ffcv_api() -> types.SimpleNamespace:
    """FFCV's loader pieces, imported on first use: importing ffcv compiles numba code (seconds
    of every start, even a command that only reports a bad folder or reads no beton) and sets
    torch's thread count to 1, restored here to what it was."""
    threads = torch.get_num_threads()
    distutils_for_ffcv()  # before ffcv: no distutils on Python 3.12
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage
    torch.set_num_threads(threads)
    return types.SimpleNamespace(
        IntDecoder=IntDecoder, SimpleRGBImageDecoder=SimpleRGBImageDecoder, Loader=Loader,
        OrderOption=OrderOption, Squeeze=Squeeze, ToDevice=ToDevice, ToTensor=ToTensor,
        ToTorchImage=ToTorchImage)



class Batch(NamedTuple):
    """One training batch on the device."""
    images: torch.Tensor  # (B, 3, 32, 32) uint8, channels_last
    labels: torch.Tensor  # (B,) int64
    index: torch.Tensor  # (B,) int64: each image's index in the beton


ORDERS = ("random", "quasi_random", "sequential")  # FFCV's OrderOption, by its name in lower case


class Shard(NamedTuple):
    """Which share of each epoch a process trains on: rank `rank` of `size` processes."""
    rank: int = 0
    size: int = 1


@dataclass(frozen=True)
class Stream:
    """How a split is read: its order, the seed of that order, FFCV's page cache, a subset of
    its indices, FFCV's threads (0: every core) and this process's shard."""
    order: str = "sequential"
    seed: int = 0
    os_cache: bool = True
    indices: Sequence[int] | None = None
    workers: int = 0
    shard: Shard = Shard()


class Batches(Protocol):
    """What the trainer iterates: one pass per epoch, `len()` batches."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def state_dict(self) -> dict: ...  # where the data order stands, for resuming

    def load_state_dict(self, state: dict) -> None: ...


def ffcv_loader(path: Path, batch_size: int, device: torch.device, stream: Stream = Stream(),
                drop_last: bool = False) -> Loader:
    """An FFCV Loader over a checked beton, yielding uint8 NCHW channels_last batches on `device`
    (a shard of several: this process's, as torch's DistributedSampler, in the process group)."""
    n = verified(path)  # header, count and SHA-256 against the metadata beside it
    indices, distributed = stream.indices, stream.shard.size > 1
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or len(indices) == 0 or indices.min() < 0 or indices.max() >= n:
            raise DataError(f"{path}: indices must be a non-empty list within 0..{n - 1}")
    check_order(stream.order, 2 if distributed else 1)
    device = torch.device(device)  # ToDevice wants a torch.device, not a string
    # Blocking copies to the device. FFCV 1.0.2 (loader/epoch_iterator.py) decodes batch k into
    # host slot k % (batches_ahead + 2) and copies it on that slot's stream; the CUDA event it
    # waits on before reusing a slot is a device-side wait (`event.wait()` on the slot's
    # stream), which keeps the device slot safe, while nothing on the host waits before the
    # decoder rewrites the pinned host slot. Our training loop never syncs, so a GPU running
    # batches_ahead + 2 batches behind would leave a copy pending on a slot whose pixels are
    # already the next batch's: a batch trained on another batch's images. A blocking copy
    # returns only when it is done, so the host slot is free when the decoder comes back to it;
    # the wait is in FFCV's producer thread (back-pressure when the GPU is behind), never in the
    # training loop.
    f = ffcv_api()
    threads = torch.get_num_threads()
    pipelines = {
        "image": [f.SimpleRGBImageDecoder(), f.ToTensor(), f.ToDevice(device, non_blocking=False),
                  f.ToTorchImage(channels_last=True)],
        "label": [f.IntDecoder(), f.ToTensor(), f.Squeeze(1),
                  f.ToDevice(device, non_blocking=False)],
    }
    loader = f.Loader(str(path), batch_size=batch_size,
                      num_workers=stream.workers or os.cpu_count() or 1,
                      order=getattr(f.OrderOption, stream.order.upper()),
                      os_cache=stream.os_cache, drop_last=drop_last, seed=stream.seed,
                      indices=indices, pipelines=pipelines, distributed=distributed)
    torch.set_num_threads(threads)
    return loader


def epoch_of(loader: Loader):
    """iter(loader), keeping torch's thread count: FFCV's __iter__ sets it to its worker count
    (a changed count would also make torch.compile recompile its graphs)."""
    threads = torch.get_num_threads()
    epoch = iter(loader)
    torch.set_num_threads(threads)
    return epoch


def check_order(order: str, processes: int = 1) -> None:
    """DataError unless FFCV can draw `order` for that many processes (it raises
    NotImplementedError for quasi_random with several)."""
    if order not in ORDERS:
        raise DataError(f"unknown order '{order}' (choose from {', '.join(ORDERS)})")
    if processes > 1 and order == "quasi_random":
        raise DataError("--data.order quasi_random does not work with several processes "
                        "(FFCV cannot shard it): use --data.order random")


def check_subset(k: int, n: int, what: str = "subset", split: str = "the split") -> None:
    """DataError unless a subset of k images (0: all) can be drawn from a split of n."""
    if k > n:
        raise DataError(f"{what} {k}: {split} has only {n} images")


class FfcvBatches:
    """Training batches streamed by FFCV's Loader (random or quasi-random order, drop_last).

    With several processes FFCV shards each epoch's order as torch's DistributedSampler: every
    process shuffles with the same seed and takes every size-th index from its rank on (the
    order is padded with repeats to a multiple of the process count)."""

    def __init__(self, path: Path, batch_size: int, device: torch.device,
                 stream: Stream = Stream(order="random")):
        self.loader = ffcv_loader(path, batch_size, device, stream, drop_last=True)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict:
        # FFCV draws epoch e's order from seed + e and counts e up on every __iter__
        return {"next_epoch": self.loader.next_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.loader.next_epoch = int(state["next_epoch"])

    def __iter__(self) -> Iterator[Batch]:
        # FFCV's __iter__ draws this epoch's order as next_traversal_order() does (from seed +
        # next_epoch, this process's shard under torchrun) and cuts it into batches in order:
        # drawn here first, it names each batch's images (one copy to the device an epoch)
        order = self.loader.next_traversal_order()[:len(self) * self.loader.batch_size]
        index = torch.as_tensor(np.asarray(order, dtype=np.int64)).to(self.device)
        bs = self.loader.batch_size
        epoch = epoch_of(self.loader)
        try:
            for i, (images, labels) in enumerate(epoch):
                # views into FFCV's ring buffer: used before the next
                yield Batch(images, labels.long(), index[i * bs:(i + 1) * bs])
        finally:  # a pass left early (break, an error): stop FFCV's thread and free its buffers
            epoch.close()
            epoch.join(timeout=5)


def load_all(path: Path, device: torch.device, indices: Sequence[int] | None = None,
             batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a beton (or `indices` of it), in order, as one (N, 3, 32, 32) batch."""
    loader = ffcv_loader(path, batch_size, device, Stream(indices=indices))
    images, labels = [], []
    for x, y in epoch_of(loader):
        images.append(x.clone())  # the ring buffer is overwritten by the next batch
        labels.append(y.clone())
    images, labels = torch.cat(images), torch.cat(labels).long()
    expected = len(indices) if indices is not None else verified(path)
    if len(labels) != expected:
        raise DataError(f"{path}: loader returned {len(labels)} images, expected {expected}")
    return images.contiguous(memory_format=torch.channels_last), labels


def content_of(data_dir: Path, meta: dict, split: str) -> str:
    """A split's content identity (`split_content`): from the metadata prepare_data.py wrote,
    or, for betons prepared before it recorded one, from the split read whole."""
    known = meta.get("content", {}).get(split)
    if isinstance(known, str) and known:
        return known
    images, labels = load_all(beton_path(Path(data_dir), split), torch.device("cpu"))
    return split_content(images.permute(0, 2, 3, 1).numpy(), labels.numpy())


class ResidentBatches:
    """Training batches from a split held in device memory: shuffled and sliced on the device.

    With several processes every one draws the same permutation (same seed) and takes every
    size-th image of it from its rank on: disjoint shards, every image at most once an epoch
    (the permutation's last len % size images sit the epoch out)."""

    def __init__(self, path: Path, batch_size: int, device: torch.device,
                 stream: Stream = Stream()):
        """`stream`: its seed, subset and shard (the order is always a fresh permutation)."""
        indices, seed, shard = stream.indices, stream.seed, stream.shard
        images, self.labels = load_all(path, device, indices)
        self.images = images.permute(0, 2, 3, 1).contiguous()  # (N, 32, 32, 3): rows index cheaply
        # beton index of each held image (the subset's, or 0..N-1)
        self.index = torch.as_tensor(np.arange(len(self.labels)) if indices is None
                                     else np.asarray(indices, dtype=np.int64),
                                     device=self.images.device)
        self.batch_size, self.shard = batch_size, shard
        self.generator = torch.Generator(device=self.images.device).manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels) // self.shard.size // self.batch_size  # drop_last, as FFCV

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[Batch]:
        order = torch.randperm(len(self.labels), device=self.images.device,
                               generator=self.generator)
        per_rank = len(self.labels) // self.shard.size
        order = order[self.shard.rank:per_rank * self.shard.size:self.shard.size]
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield Batch(self.images[idx].permute(0, 3, 1, 2), self.labels[idx],  # channels_last
                        self.index[idx])


def subset_indices(n: int, k: int, seed: int = 0) -> np.ndarray | None:
    """A fixed random subset of k of n indices, sorted (None when k is 0: everything)."""
    if k <= 0:
        return None
    check_subset(k, n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def train_batches(kind: str, path: Path, batch_size: int, device: torch.device,
                  stream: Stream = Stream(order="random")) -> Batches:
    """The training data path chosen by name: 'ffcv' (streamed) or 'resident' (device memory);
    `batch_size` is per process."""
    if kind == "ffcv":
        return FfcvBatches(path, batch_size, device, stream)
    if kind == "resident":
        return ResidentBatches(path, batch_size, device, stream)
    raise DataError(f"unknown loader '{kind}' (choose ffcv or resident)")
