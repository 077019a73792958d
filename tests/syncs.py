"""Counting what would stop the host for the device on a GPU, observed on the CPU: reading a
tensor's value (.item(), bool(), .tolist(), .numpy()), a tensor built from Python data (a
host-to-device copy on a GPU) and ops whose output size depends on the data (nonzero & co.)."""
from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"_local_scalar_dense", "lift_fresh", "nonzero", "masked_select", "unique",
            "_unique2", "repeat_interleave"}


class SyncCounter(TorchDispatchMode):
    """Counts the ops in SYNC_OPS by name while active."""

    def __init__(self):
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in SYNC_OPS:
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    """A Counter of sync-like events inside the block (.tolist() and .numpy() are not
    dispatched ops, so they are counted by patching)."""
    counter = SyncCounter()
    for method in ("tolist", "numpy"):
        original = getattr(torch.Tensor, method)

        def counted(self, *a, _original=original, _name=method, **k):
            counter.seen[_name] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, method, counted)
    with counter:
        yield counter.seen
    monkeypatch.undo()
