"""The official CIFAR-10 python batches (archive or extracted folder) -> validated splits.

The batches are pickles: they are read by an unpickler that builds only what CIFAR-10's own files
contain (dicts, lists, numpy arrays), so a tampered file cannot run code.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from .errors import DataError
from .sources import BATCHES, CLASSES, Split, _checked, _concat, _tar_files

__all__ = ["parse_batch", "read_batches_folder", "read_python_archive", "CLASSES"]


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only what CIFAR-10's batches contain: dicts, lists, numpy arrays."""

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
            ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes under protocol 2
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return allowed[(module, name)]()


def parse_batch(raw: bytes, where: str) -> Split:
    """One pickled CIFAR-10 batch -> Split, refusing anything a CIFAR batch does not contain."""
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:
        raise DataError(f"{where}: not a CIFAR-10 batch ({e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8
            and data.ndim == 2 and data.shape[1] == 3 * 32 * 32):
        raise DataError(f"{where}: 'data' is not a uint8 (N, 3072) array of 32x32 RGB images")
    return _checked(Split(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(),
                          np.asarray(labels if labels is not None else [], dtype=np.int64)), where)


def read_batches_folder(folder: Path) -> dict[str, Split]:
    """An extracted `cifar-10-batches-py/` folder -> {"train", "test"} splits."""
    out = {}
    for split, names in BATCHES.items():
        parts = []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise DataError(f"{path}: missing CIFAR-10 batch file")
            parts.append(parse_batch(path.read_bytes(), str(path)))
        out[split] = _concat(parts, f"{folder} ({split})")
    return out


def read_python_archive(path: Path) -> dict[str, Split]:
    """The official cifar-10-python.tar.gz -> splits, read in memory."""
    wanted = {n for names in BATCHES.values() for n in names}
    found = {os.path.basename(name): raw for name, raw in _tar_files(path)
             if os.path.basename(name) in wanted}
    out = {}
    for split, names in BATCHES.items():
        missing = [n for n in names if n not in found]
        if missing:
            raise DataError(f"{path}: archive has no {missing[0]} (not the CIFAR-10 python archive?)")
        out[split] = _concat([parse_batch(found[n], f"{path}:{n}") for n in names],
                             f"{path} ({split})")
    return out
