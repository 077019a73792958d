"""The official CIFAR-10 python batches (archive or extracted folder) -> validated splits.

The batches are pickles. They are read by an unpickler that builds only what CIFAR-10's own files
contain, so a tampered file can neither run code nor make the reader allocate more than it holds:
- globals: numpy's array reconstructor, `numpy.dtype` for integer types, and latin-1 encoding;
  `numpy.ndarray` is a token the reconstructor accepts, not something a pickle can call, so no
  view, stride or uninitialised buffer can be made;
- an array gets its pixels only from bytes present in the file, at most 10,000 x 3,072 of them,
  as bytes (Python 3's pickles) or as a latin-1 `str` (the official files, pickled by Python 2);
- labels must be a list of Python ints in 0..9, one per image.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np

from .cifar import (BATCHES, IMAGE_BYTES, MAX_BATCH_FILE_BYTES, MAX_BATCH_IMAGES, CLASSES, Split,
                    check_split, concat, tar_members)
from ..errors import DataError

__all__ = ["parse_batch", "read_batches_folder", "read_python_archive"]

_ARRAY_TOKEN = object()  # what `numpy.ndarray` unpickles to: an argument, never a callable
_DTYPES = {np.dtype("u1"), np.dtype("<i8"), np.dtype("<i4")}


class _Array(np.ndarray):
    """An array whose only way to get contents is __setstate__ from bytes in the pickle."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, _, raw = state[-4:]
        if not (isinstance(shape, tuple) and 1 <= len(shape) <= 2
                and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"array shape {shape!r} is not CIFAR-10's")
        if not isinstance(dtype, np.dtype) or dtype not in _DTYPES or dtype.hasobject:
            raise pickle.UnpicklingError(f"array type {dtype!r} is not CIFAR-10's")
        if shape[0] > MAX_BATCH_IMAGES or (len(shape) == 2 and shape[1] != IMAGE_BYTES):
            raise pickle.UnpicklingError(f"array of shape {shape} is larger than a CIFAR-10 "
                                         f"batch ({MAX_BATCH_IMAGES} x {IMAGE_BYTES})")
        # The official batches were pickled by Python 2: their raw data is a py2 `str`, which
        # latin-1 unpickling turns into a `str` of one character per byte (as numpy expects).
        if not isinstance(raw, (bytes, str)) or len(raw) != int(np.prod(shape)) * dtype.itemsize:
            raise pickle.UnpicklingError("array data missing or not the size its shape claims")
        if isinstance(raw, str):
            try:
                raw = raw.encode("latin1")
            except UnicodeEncodeError:
                raise pickle.UnpicklingError("array data is text, not bytes") from None
        super().__setstate__((*state[:-1], raw))


def _reconstruct(token, shape, typecode):
    if token is not _ARRAY_TOKEN or shape != (0,):
        raise pickle.UnpicklingError("refusing an array that is not a plain numpy array")
    return np.ndarray.__new__(_Array, (0,), np.uint8)


def _dtype(name, align=False, copy=True):
    if name not in ("u1", "i8", "i4"):
        raise pickle.UnpicklingError(f"refusing numpy type {name!r}")
    return np.dtype(name)


def _latin1(text, encoding):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing an encoding other than latin-1")
    return codecs.encode(text, "latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only what CIFAR-10's batches contain: dicts, lists, numpy arrays."""

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): _ARRAY_TOKEN,
            ("numpy", "dtype"): _dtype,
            ("_codecs", "encode"): _latin1,  # bytes under protocol 2
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return allowed[(module, name)]


def parse_batch(raw: bytes, where: str) -> Split:
    """One pickled CIFAR-10 batch -> Split, refusing anything a CIFAR batch does not contain."""
    if len(raw) > MAX_BATCH_FILE_BYTES:
        raise DataError(f"{where}: {len(raw)} bytes, more than a CIFAR-10 batch")
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:
        raise DataError(f"{where}: not a CIFAR-10 batch ({e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    try:
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    except UnicodeDecodeError:
        raise DataError(f"{where}: not a CIFAR-10 batch (a key that is not text)") from None
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, _Array) and data.dtype == np.uint8 and data.ndim == 2):
        raise DataError(f"{where}: 'data' is not a uint8 (N, 3072) array of 32x32 RGB images")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"{where}: 'labels' is not a list of one label per image")
    for x in labels:
        if type(x) is not int:
            raise DataError(f"{where}: label {x!r} is not an int")
        if not 0 <= x < len(CLASSES):
            raise DataError(f"{where}: label {x} out of range 0..9")
    images = data.view(np.ndarray).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return check_split(Split(images, np.array(labels, dtype=np.int64)), where)


def read_batches_folder(folder: Path) -> dict[str, Split]:
    """An extracted `cifar-10-batches-py/` folder -> {"train", "test"} splits."""
    out = {}
    for split, names in BATCHES.items():
        parts = []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise DataError(f"{path}: missing CIFAR-10 batch file")
            if path.stat().st_size > MAX_BATCH_FILE_BYTES:  # before reading it
                raise DataError(f"{path}: {path.stat().st_size} bytes, more than a CIFAR-10 "
                                "batch")
            parts.append(parse_batch(path.read_bytes(), str(path)))
        out[split] = concat(parts, f"{folder} ({split})")
    return out


def read_python_archive(path: Path) -> dict[str, Split]:
    """The official cifar-10-python.tar.gz -> splits, read in memory (only its batch files)."""
    wanted = {n for names in BATCHES.values() for n in names}
    found: dict[str, bytes] = {}
    for name, raw in tar_members(path, lambda n: os.path.basename(n) in wanted,
                                 MAX_BATCH_FILE_BYTES):
        base = os.path.basename(name)
        if base in found:
            raise DataError(f"{path}: holds {base} twice")
        found[base] = raw
    out = {}
    for split, names in BATCHES.items():
        missing = [n for n in names if n not in found]
        if missing:
            raise DataError(f"{path}: archive has no {missing[0]} (not the CIFAR-10 python archive?)")
        out[split] = concat([parse_batch(found[n], f"{path}:{n}") for n in names],
                            f"{path} ({split})")
    return out
