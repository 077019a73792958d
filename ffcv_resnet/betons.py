"""Betons: CIFAR-10 splits written once as FFCV .beton files (atomically), checked, and reused.

cifar10.json, written last, records each beton's sample count and SHA-256. Every reader checks
both before use (`verified`): the header and allocation table, then the checksum, computed once
per process and file version (~0.15 s for both full-size betons).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .cifar import CLASSES, SPLITS, Split
from .errors import DataError, Interrupted, atomic_write_bytes
from .sources import detect, download, fingerprint, read_source

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


class _ArrayDataset:
    """Indexed dataset over in-memory arrays, as DatasetWriter wants it."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i])


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


class _WriteGuard:
    """While FFCV's forked writers run: Ctrl-C and SIGTERM stop the parent with an exception and
    make each worker (which inherits the handler) exit at once, quietly.

    Python ignores an exception raised while a fork hook runs (FFCV forks its workers): a
    watchdog sends the signal again until the exception has really reached the writer's caller.
    """

    def __init__(self):
        self.parent, self.caught, self.armed = os.getpid(), None, True
        self._done = threading.Event()

    def _handler(self, signum, frame):
        if os.getpid() != self.parent:
            os._exit(1)  # a writer process: the parent removes what it leaves
        if self.armed:
            self.caught = (signum, time.monotonic())
            raise Interrupted() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            if self.armed and self.caught and time.monotonic() - self.caught[1] > 0.5:
                os.kill(self.parent, self.caught[0])

    def disarm(self) -> None:
        """The interrupt has arrived where it is handled: ignore further signals until exit."""
        self.armed = False

    def _unraisable(self, info) -> None:
        if not (self.caught and issubclass(info.exc_type, KeyboardInterrupt)):
            self._old_hook(info)  # only the swallowed interrupt is kept quiet

    def __enter__(self) -> "_WriteGuard":
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        self._old_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        for s, h in self._old.items():
            signal.signal(s, h)
        sys.unraisablehook = self._old_hook


def _stop_writers(writer, tb) -> None:
    """After an interrupted write: end FFCV's workers, let its queues go, free its shared memory."""
    import multiprocessing
    import multiprocessing.queues
    for p in multiprocessing.active_children():
        p.terminate()
    for p in multiprocessing.active_children():
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    while tb is not None:  # the writer's queues would block interpreter exit on a full pipe
        for v in list(tb.tb_frame.f_locals.values()):
            if isinstance(v, multiprocessing.queues.Queue):
                v.cancel_join_thread()
        tb = tb.tb_next
    sm = getattr(writer, "metadata_sm", None)
    if sm is not None and not isinstance(sm, int):
        try:
            sm.close()
            sm.unlink()
        except (OSError, ValueError):
            pass


def write_beton(path: Path, split: Split, workers: int = 0) -> str:
    """Write one split as a beton with raw uint8 images, via a temporary name then a rename;
    returns its SHA-256. An interrupt stops every writer process and removes the temporary."""
    import torch
    threads = torch.get_num_threads()
    from ffcv.fields import IntField, RGBImageField  # import ffcv resets torch's thread count
    from ffcv.writer import DatasetWriter

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
    writer = None
    try:
        with _WriteGuard() as guard:
            try:
                writer = DatasetWriter(str(tmp), fields, num_workers=workers or os.cpu_count() or 1)
                writer.from_indexed_dataset(_ArrayDataset(split), chunksize=1000)
            except BaseException as e:
                guard.disarm()
                _stop_writers(writer, e.__traceback__)
                raise
        check_beton(tmp, len(split.labels))
        checksum = sha256_file(tmp)
        os.replace(tmp, path)
        return checksum
    finally:
        tmp.unlink(missing_ok=True)
        torch.set_num_threads(threads)


def remove_stale_temporaries(data_dir: Path) -> list[Path]:
    """Temporary betons left by a killed writer (its pid no longer runs): removed."""
    gone = []
    for p in Path(data_dir).glob(".*.beton.*.tmp"):
        m = re.fullmatch(r"\..+\.beton\.(\d+)\.tmp", p.name)
        if m and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_metadata(data_dir: Path) -> dict | None:
    """The metadata of the betons in `data_dir`, or None if absent or unreadable."""
    try:
        meta = json.loads((Path(data_dir) / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format_version") == FORMAT_VERSION else None


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


def prepare(data_dir: Path, source: str = "", force: bool = False, workers: int = 0,
            log=print) -> dict:
    """Make train.beton and test.beton in `data_dir` from `source` unless they are up to date.

    Up to date means: the metadata is there, each beton's count and SHA-256 match it, and (when
    `source` is named) it came from that source. Damaged betons are rebuilt from the named
    source, else from the one they were made from.
    """
    data_dir = Path(data_dir)
    for p in remove_stale_temporaries(data_dir) if data_dir.is_dir() else []:
        log(f"removed {p}, left by a killed run")
    meta = read_metadata(data_dir)
    problem = damage(data_dir, meta) if meta else None
    if not source and meta and not force:
        if problem is None:
            log(f"{data_dir}: betons up to date (from {meta['source']['path']}); nothing to do "
                "(--data.force rebuilds)")
            return meta
        recorded = Path(meta["source"]["path"])
        if not recorded.exists():
            raise DataError(f"{problem}; its source {recorded} is gone: rebuild with "
                            "--data.source SOURCE")
        log(f"{problem}: rebuilding from {recorded}")
        source = str(recorded)
    src = Path(source).expanduser() if source else download(data_dir)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    stamp = fingerprint(src)  # paths, sizes and times: cheaper than opening the source
    if meta and not force and meta["source"].get("fingerprint") == stamp:
        if problem is None:
            log(f"{data_dir}: betons up to date (from {src}); nothing to do "
                "(--data.force rebuilds)")
            return meta
        log(f"{problem}: rebuilding")
    kind = detect(src)
    log(f"reading {kind} {src}")
    splits = read_source(src, kind, log)  # every image checked before anything is written
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / METADATA).unlink(missing_ok=True)  # betons count as complete only with metadata
    checksums = {}
    for name, split in splits.items():
        log(f"writing {beton_path(data_dir, name)} ({len(split.labels)} images)")
        checksums[name] = write_beton(beton_path(data_dir, name), split, workers)
    meta = {"format_version": FORMAT_VERSION, "classes": list(CLASSES),
            "counts": {s: len(splits[s].labels) for s in SPLITS}, "sha256": checksums,
            "source": {"kind": kind, "path": str(src.resolve()), "fingerprint": stamp},
            "image": {"shape": [32, 32, 3], "dtype": "uint8", "write_mode": "raw"}}
    atomic_write_bytes(data_dir / METADATA, json.dumps(meta, indent=2).encode())
    return meta
