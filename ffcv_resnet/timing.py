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


def device_name(device: torch.device) -> str:
    """What a figure was measured on: the GPU's name, or the CPU's model and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    import re
    from pathlib import Path
    name = platform.processor() or platform.machine()
    try:
        name = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    return f"{name.strip()} ({torch.get_num_threads()} threads)"


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    from .errors import UserError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--training.device cuda asked for, but no CUDA device is available")
    return torch.device(name)
