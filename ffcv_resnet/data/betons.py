"""Beton files: their format checks, checksums and metadata (cifar10.json). convert.py writes them.

cifar10.json, written last, records each beton's sample count and SHA-256. Every reader checks
both before use (`verified`): the header and allocation table, then the checksum, computed once
per process and file version (~0.15 s for both full-size betons).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .cifar import CLASSES, SPLITS
from ..errors import DataError

# ffcv.types' header layout, mirrored so that checking betons needs no ffcv/numba/torch import
# (a test asserts they are identical): the up-to-date check of a rerun stays instant.
CURRENT_VERSION = 2
HeaderType = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                       ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
ALLOC_TABLE_TYPE = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
FORMAT_VERSION = 2  # 2: with each beton's SHA-256
METADATA = "cifar10.json"


def beton_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.beton"


def check_beton(path: Path, expected: int | None = None) -> int:
    """Number of samples in a complete beton; DataError if missing, truncated or not a beton."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such beton (run scripts/prepare_data.py first)")
    size = path.stat().st_size
    if size < HeaderType.itemsize:
        raise DataError(f"{path}: not a beton ({size} bytes)")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if int(header["version"]) != CURRENT_VERSION or int(header["num_fields"]) != 2:
        raise DataError(f"{path}: not a beton of this format (FFCV version {CURRENT_VERSION})")
    n, table_at = int(header["num_samples"]), int(header["alloc_table_ptr"])
    table_bytes = size - table_at
    if table_at > size or table_bytes % ALLOC_TABLE_TYPE.itemsize:
        raise DataError(f"{path}: truncated beton ({size} bytes)")
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table_at)
    if (len(np.unique(table["sample_id"])) != n
            or (table["ptr"] + table["size"]).max(initial=0) > table_at):
        raise DataError(f"{path}: truncated or corrupt beton (allocation table does not cover "
                        f"its {n} samples)")
    if expected is not None and n != expected:
        raise DataError(f"{path}: holds {n} samples, expected {expected}")
    return n


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime, inode) -> SHA-256: hash each version once


def digest(path: Path) -> str:
    """The SHA-256 of a file, remembered for as long as the file is not changed."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def split_content(images: np.ndarray, labels: np.ndarray) -> str:
    """Identity of a split by what it holds: SHA-256 (16 hex) of its labels (int64) and its
    pixels (N, 32, 32, 3 uint8), in order. Betons are not byte-for-byte reproducible (FFCV's
    writer places pages as its workers finish), and a source's fingerprint changes when the file
    is moved or copied: this does neither."""
    h = hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16]


def read_metadata(data_dir: Path) -> dict | None:
    """The metadata of the betons in `data_dir`, or None if absent or unreadable."""
    try:
        meta = json.loads((Path(data_dir) / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return meta if _well_formed(meta) else None


def _well_formed(meta) -> bool:
    """The metadata this version writes: CIFAR-10's classes, int counts, SHA-256s, a source."""
    try:
        return (meta["format_version"] == FORMAT_VERSION and meta["classes"] == list(CLASSES)
                and all(type(meta["counts"][s]) is int and meta["counts"][s] > 0
                        and isinstance(meta["sha256"][s], str) for s in SPLITS)
                and all(isinstance(meta["source"][k], str) for k in ("kind", "path",
                                                                      "fingerprint")))
    except (KeyError, TypeError):
        return False


def verify(path: Path, count: int, checksum: str) -> None:
    """DataError naming the beton unless its header, table, count and SHA-256 are as recorded."""
    check_beton(path, count)
    if digest(path) != checksum:
        raise DataError(f"{path}: damaged beton (its SHA-256 differs from the one recorded in "
                        f"{METADATA}); rebuild it: scripts/prepare_data.py --data.force true "
                        f"--data.source SOURCE")


def damage(data_dir: Path, meta: dict) -> str | None:
    """Why the betons in `data_dir` cannot be used as `meta` describes them (None: they can)."""
    try:
        for s in SPLITS:
            verify(beton_path(data_dir, s), meta["counts"][s], meta["sha256"][s])
    except DataError as e:
        return str(e).split(";")[0]
    except (KeyError, TypeError):
        return f"{data_dir / METADATA}: malformed"
    return None


def checked_metadata(data_dir: Path) -> dict:
    """The betons' metadata, after checking both betons against it (counts and checksums)."""
    meta = read_metadata(data_dir)
    if meta is None:
        old = (Path(data_dir) / METADATA).is_file()
        raise DataError(f"{data_dir}: {'an older or unreadable' if old else 'no'} {METADATA}; "
                        f"run scripts/prepare_data.py --data.dir {data_dir}")
    for s in SPLITS:
        verify(beton_path(data_dir, s), meta["counts"][s], meta["sha256"][s])
    return meta


def verified(path: Path) -> int:
    """The sample count of a beton, after checking it against the cifar10.json beside it."""
    path = Path(path)
    meta = read_metadata(path.parent)
    split = path.name.removesuffix(".beton")
    if meta is None or split not in meta.get("sha256", {}):
        n = check_beton(path)  # a missing or damaged file is the first thing to say
        raise DataError(f"{path}: no checksum for it in {path.parent / METADATA} ({n} samples); "
                        "betons are read only beside the metadata prepare_data.py writes")
    verify(path, meta["counts"][split], meta["sha256"][split])
    return meta["counts"][split]
