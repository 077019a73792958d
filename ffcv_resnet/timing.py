"""Timing GPU work honestly: synchronise the device before reading the clock."""
from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued device work (a host sync: call only outside hot loops)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """`with Stopwatch(device) as t: ...` then `t.seconds`; syncs the device on entry and exit."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start
