"""Devices: the --*.device option and its check, resolving it to a torch device, and naming what
a figure was measured on (device, versions, date, git sha). The option and its check need no
torch (a script checks its options before loading it); the rest imports it when called."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import option, require
from .errors import UserError

if TYPE_CHECKING:
    import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout: its git sha, its scripts
DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?")  # what --*.device accepts
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def device_option(resumable: bool = False) -> Any:
    """The dataclass field of a --SECTION.device option (auto by default)."""
    return option("auto", DEVICE_CHOICES, resumable=resumable)


def check_device(prefix: str, value: str) -> None:
    """ConfigError unless `value` is a device name --PREFIX.device accepts."""
    require(bool(DEVICE_NAMES.fullmatch(value)), f"{prefix}.device", value, DEVICE_CHOICES)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    import torch
    if not DEVICE_NAMES.fullmatch(name):
        raise UserError(f"unknown device {name!r} (expected {DEVICE_CHOICES})")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name} asked for, but no CUDA device is available")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name} asked for, but there are only "
                        f"{torch.cuda.device_count()} CUDA devices")
    return device


def device_name(device: torch.device) -> str:
    """What a figure was measured on: the GPU's name, or the CPU's model and thread count."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    name = platform.processor() or platform.machine()
    try:
        name = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    return f"{name.strip()} ({torch.get_num_threads()} threads)"


GIT_ENV = "FFCV_RESNET_GIT"  # the commit of a copy without .git (the device command sets it)
CODE_PATHS = ("ffcv_resnet", "benchmarks/*.py", "scripts", "configs")  # what "dirty" looks at


def git_sha(root: Path = PROJECT_ROOT) -> str:
    """The checkout's short commit, "-dirty" when its code differs from it; from $FFCV_RESNET_GIT
    where there is no git repository (a working-tree copy on a GPU machine); else "unknown"."""
    import subprocess
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=root,
                               capture_output=True, text=True).stdout.strip() if sha else ""
    except OSError:
        sha = dirty = ""
    if sha:
        return sha + ("-dirty" if dirty else "")
    return os.environ.get(GIT_ENV, "").strip() or "unknown"


def provenance(device: torch.device) -> dict:
    """What a figure was measured on: device name, torch and CUDA versions, date, git sha."""
    import torch
    import datetime
    sha = git_sha()
    device = torch.device(device)
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "date": datetime.date.today().isoformat(), "git_sha": sha}


def slug(info: dict) -> str:
    """A file-name-safe short name of the device a `provenance` record names."""
    base = "cpu" if info["device_type"] == "cpu" else info["device"]
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
