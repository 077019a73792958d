"""Numeric precision: the precisions a run may take, what `auto` means on a device, and autocast
for bf16/fp16 (torch imported when they are called: the options need none)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTO_PRECISION = "auto: bf16 on CUDA and on CPUs with native bf16, else fp32"


def auto_precision(device: torch.device) -> str:
    """bf16 on CUDA and on CPUs with native bf16 kernels (oneDNN), else fp32."""
    import torch
    if torch.device(device).type == "cuda":
        return "bf16"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def resolve_precision(name: str, device: torch.device) -> str:
    """`name`, with 'auto' turned into what `device` gets."""
    return auto_precision(device) if name == "auto" else name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on the device, or nothing for fp32."""
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
