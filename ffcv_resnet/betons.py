"""Betons: CIFAR-10 splits written once as FFCV .beton files (atomically), checked, and reused."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import DataError, atomic_write_bytes
from .sources import CLASSES, SPLITS, Split, detect, download, fingerprint, read_source

# ffcv.types' header layout, mirrored so that checking betons needs no ffcv/numba/torch import
# (a test asserts they are identical): the up-to-date check of a rerun stays instant.
CURRENT_VERSION = 2
HeaderType = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                       ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
ALLOC_TABLE_TYPE = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
FORMAT_VERSION = 1
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


class _ArrayDataset:
    """Indexed dataset over in-memory arrays, as DatasetWriter wants it."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i])


def write_beton(path: Path, split: Split, workers: int = 0) -> None:
    """Write one split as a beton with raw uint8 images, via a temporary name then a rename."""
    import torch
    threads = torch.get_num_threads()
    from ffcv.fields import IntField, RGBImageField  # import ffcv resets torch's thread count
    from ffcv.writer import DatasetWriter

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
    try:
        DatasetWriter(str(tmp), fields, num_workers=workers or os.cpu_count() or 1) \
            .from_indexed_dataset(_ArrayDataset(split), chunksize=1000)
        check_beton(tmp, len(split.labels))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        torch.set_num_threads(threads)


def read_metadata(data_dir: Path) -> dict | None:
    """The metadata of the betons in `data_dir`, or None if absent or unreadable."""
    try:
        meta = json.loads((Path(data_dir) / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format_version") == FORMAT_VERSION else None


def betons_complete(data_dir: Path, meta: dict) -> bool:
    """Both betons exist, are intact and hold the counts the metadata promises."""
    try:
        return all(check_beton(beton_path(data_dir, s), meta["counts"][s]) for s in SPLITS)
    except (DataError, KeyError, TypeError):
        return False


def checked_metadata(data_dir: Path) -> dict:
    """The betons' metadata, after checking both betons against its counts (before loading)."""
    meta = read_metadata(data_dir)
    if meta is None:
        raise DataError(f"{data_dir}: no {METADATA}; run scripts/prepare_data.py --data.dir "
                        f"{data_dir}")
    for s in SPLITS:
        check_beton(beton_path(data_dir, s), meta["counts"][s])
    return meta


def prepare(data_dir: Path, source: str = "", force: bool = False, workers: int = 0,
            log=print) -> dict:
    """Make train.beton and test.beton in `data_dir` from `source` unless they are up to date."""
    data_dir = Path(data_dir)
    meta = read_metadata(data_dir)
    if not source and meta and not force and betons_complete(data_dir, meta):
        log(f"{data_dir}: betons up to date (from {meta['source']['path']}); nothing to do "
            "(--data.force rebuilds)")
        return meta
    src = Path(source).expanduser() if source else download(data_dir)
    kind = detect(src)
    stamp = fingerprint(src)
    if meta and not force and meta["source"].get("fingerprint") == stamp \
            and betons_complete(data_dir, meta):
        log(f"{data_dir}: betons up to date (from {src}); nothing to do (--data.force rebuilds)")
        return meta
    log(f"reading {kind} {src}")
    splits = read_source(src, kind)  # every image checked before anything is written
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / METADATA).unlink(missing_ok=True)  # betons count as complete only with metadata
    for name, split in splits.items():
        log(f"writing {beton_path(data_dir, name)} ({len(split.labels)} images)")
        write_beton(beton_path(data_dir, name), split, workers)
    meta = {"format_version": FORMAT_VERSION, "classes": list(CLASSES),
            "counts": {s: len(splits[s].labels) for s in SPLITS},
            "source": {"kind": kind, "path": str(src.resolve()), "fingerprint": stamp},
            "image": {"shape": [32, 32, 3], "dtype": "uint8", "write_mode": "raw"}}
    atomic_write_bytes(data_dir / METADATA, json.dumps(meta, indent=2).encode())
    return meta
