"""Converting a CIFAR-10 source to betons once: read and check everything, write each beton
under a temporary name with FFCV's writer, record counts and SHA-256s in cifar10.json last.

Ctrl-C and SIGTERM while writing stop every writer process and remove the temporary file; so
does a writer process that dies (FFCV's parent would wait for it forever), with one line: a full
disk names the folder and the space the betons need. Temporaries left by a killed run are
removed by the next one.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from .betons import (FORMAT_VERSION, METADATA, beton_path, check_beton, damage, read_metadata,
                     sha256_file, split_content)
from .cifar import CLASSES, SPLITS, Split
from ..errors import DataError, DiskFull, Interrupted, exit_at_once
from ..io import atomic_path, atomic_write_bytes
from .sources import detect, download, fingerprint, read_source


class _ArrayDataset:
    """Indexed dataset over in-memory arrays, as DatasetWriter wants it."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i])


BYTES_PER_IMAGE = 32 * 32 * 3 + 64  # a raw image, its label and its share of the tables


class WriterDied(RuntimeError):
    """A writer process ended before its work was done (exit code, its last stderr line)."""


_CHILD_STDERR: list[int] = []  # while writing: the file each forked writer's stderr goes to


def _to_log_in_child() -> None:
    if _CHILD_STDERR:  # a writer's own traceback goes to the guard's log, not the terminal
        os.dup2(_CHILD_STDERR[0], 2)


os.register_at_fork(after_in_child=_to_log_in_child)


class _WriteGuard:
    """While FFCV's forked writers run: Ctrl-C and SIGTERM stop the parent with an exception and
    make each worker (which inherits the handler) exit at once, quietly.

    Two ways a signal can get lost are covered by a watchdog thread: the kernel may deliver it to
    another thread while the main thread blocks on a dead worker's pipe, and Python ignores an
    exception raised while a fork hook runs. The watchdog learns of every signal through the
    wakeup fd and sends it to the main thread itself until its handler has really run.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    DIED = signal.SIGUSR1  # the watchdog's word to the main thread: a writer died

    def __init__(self):
        self.parent, self.caught, self.armed = os.getpid(), None, True
        self.main = threading.main_thread().ident
        self._done = threading.Event()
        self.died: tuple[int, str] | None = None  # (exit code, last line of its stderr)

    def _handler(self, signum, frame):
        if os.getpid() != self.parent:
            os._exit(1)  # a writer process: the parent removes what it leaves
        if signum == self.DIED:
            if self.armed and self.died:
                raise WriterDied(*self.died)
            return
        if self.armed:
            self.caught = (signum, time.monotonic())
            raise Interrupted() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _dead_writer(self) -> tuple[int, str] | None:
        """The exit code and last stderr line of a writer process that failed, if one did."""
        for p in list(multiprocessing.process._children):  # noqa: SLF001 (polls, reaps none)
            code = p.exitcode
            if code not in (None, 0):
                self.log.seek(0)
                lines = [x.strip() for x in self.log.read().decode(errors="replace")
                         .splitlines() if x.strip()]
                return code, (lines or ["no message"])[-1][:200]
        return None

    def _watch(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)  # never this thread's to handle
        seen = None
        while not self._done.wait(0.1):
            try:
                data = os.read(self._r, 64)
            except BlockingIOError:
                data = b""
            if data and data[-1] in [int(s) for s in self.SIGNALS]:
                seen = data[-1]
            if not self.armed:
                continue
            if self.died is None and not self.caught:
                self.died = self._dead_writer()
            if self.died and not self.caught:  # the parent would wait for it forever
                signal.pthread_kill(self.main, self.DIED)
            elif seen and not self.caught:  # delivered elsewhere: hand it to the main thread
                signal.pthread_kill(self.main, seen)
            elif self.caught and time.monotonic() - self.caught[1] > 0.5:  # swallowed: again
                signal.pthread_kill(self.main, self.caught[0])

    def disarm(self) -> None:
        """The interrupt has arrived where it is handled: ignore further signals until exit."""
        self.armed = False

    def _unraisable(self, info) -> None:
        if not (self.caught and issubclass(info.exc_type, KeyboardInterrupt)):
            self._old_hook(info)  # only the swallowed interrupt is kept quiet

    def __enter__(self) -> "_WriteGuard":
        self.log = tempfile.TemporaryFile()
        _CHILD_STDERR[:] = [self.log.fileno()]
        self._r, w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(w, False)
        self._w, self._old_fd = w, signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, self._handler) for s in (*self.SIGNALS, self.DIED)}
        self._old_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        _CHILD_STDERR.clear()
        self.log.close()
        self._thread.join()
        for s, h in self._old.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(self._old_fd)
        sys.unraisablehook = self._old_hook
        os.close(self._r)
        os.close(self._w)


def _stop_writers(writer, tb) -> None:
    """After an interrupted write: end FFCV's workers, let its queues go, free its shared memory;
    end the line FFCV's progress bar was drawing, so what is said next starts its own."""
    import multiprocessing.queues
    sys.stderr.write("\n")
    sys.stderr.flush()
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
    exit_at_once()  # and whatever else FFCV left behind must not hold the exit either
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
    from .ffcv_shim import distutils_for_ffcv
    distutils_for_ffcv()  # before ffcv: no distutils on Python 3.12
    from ffcv.fields import IntField, RGBImageField  # import ffcv resets torch's thread count
    from ffcv.writer import DatasetWriter

    fields = {"image": RGBImageField(write_mode="raw"), "label": IntField()}
    try:
        return _write(path, split, workers, fields, DatasetWriter)
    except WriterDied as e:
        code, line = e.args
        raise DataError(f"{path.parent}: a writer process died while writing {path.name} "
                        f"(exit code {code}: {line}); nothing was kept") from None
    finally:
        torch.set_num_threads(threads)


def _write(path: Path, split: Split, workers: int, fields: dict, DatasetWriter) -> str:
    """The write itself: into a temporary name, under the guard; its SHA-256."""
    writer = None
    with atomic_path(path) as tmp, _WriteGuard() as guard:  # tmp: .NAME.PID.tmp
        try:
            writer = DatasetWriter(str(tmp), fields, num_workers=workers or os.cpu_count() or 1)
            writer.from_indexed_dataset(_ArrayDataset(split), chunksize=1000)
        except BaseException as e:
            guard.disarm()
            _stop_writers(writer, e.__traceback__)
            raise
        check_beton(tmp, len(split.labels))
        return sha256_file(tmp)


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


def _check_folder(data_dir: Path) -> None:
    """DataError unless `data_dir` is a folder or can become one (write errors come later)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir}: exists and is not a folder")
    existing = next((p for p in [data_dir, *data_dir.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise DataError(f"{data_dir}: {existing} is not a folder")


def prepare(data_dir: Path, source: str = "", force: bool = False, workers: int = 0,
            log=print) -> dict:
    """Make train.beton and test.beton in `data_dir` from `source` unless they are up to date.

    Up to date means: the metadata is there, each beton's count and SHA-256 match it, and (when
    `source` is named) it came from that source. Damaged betons are rebuilt from the named
    source, else from the one they were made from.
    """
    data_dir = Path(data_dir)
    _check_folder(data_dir)
    try:
        for p in remove_stale_temporaries(data_dir) if data_dir.is_dir() else []:
            log(f"removed {p}, left by a killed run")
    except OSError:
        pass  # a read-only folder can still hold betons that are up to date
    meta = read_metadata(data_dir)
    problem = damage(data_dir, meta) if meta else None
    if not source and meta and force:  # rebuild from the source they were built from
        recorded = Path(meta["source"]["path"])
        if not recorded.exists():
            raise DataError(f"--data.force: the betons' source {recorded} is gone: rebuild with "
                            "--data.source SOURCE")
        log(f"rebuilding from {recorded} (--data.force)")
        source = str(recorded)
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
        source, problem = str(recorded), "said"
    src = Path(source).expanduser() if source else download(data_dir)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    stamp = fingerprint(src)  # paths, sizes and times: cheaper than opening the source
    if meta and not force and meta["source"].get("fingerprint") == stamp:
        if problem is None:
            log(f"{data_dir}: betons up to date (from {src}); nothing to do "
                "(--data.force rebuilds)")
            return meta
        if problem != "said":
            log(f"{problem}: rebuilding")
    kind = detect(src)
    log(f"reading {kind} {src}")
    splits = read_source(src, kind, log)  # every image checked before anything is written
    checksums = {}
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # The old metadata stays until replaced: a beton renamed into place no longer matches
        # its checksum, so an interrupted rebuild is found damaged and rebuilt from that source.
        for name, split in splits.items():
            log(f"writing {beton_path(data_dir, name)} ({len(split.labels)} images)")
            checksums[name] = write_beton(beton_path(data_dir, name), split, workers)
    except DiskFull as e:
        need = sum(len(s.labels) for s in splits.values()) * BYTES_PER_IMAGE / 2**20
        free = shutil.disk_usage(data_dir).free / 2**20
        raise DiskFull(f"{e}: the betons need about {need:.0f} MB, {free:.0f} MB are free "
                       "there") from None
    except OSError as e:
        raise DataError(f"{data_dir}: cannot write the betons ({e.strerror or e})") from None
    meta = {"format_version": FORMAT_VERSION, "classes": list(CLASSES),
            "counts": {s: len(splits[s].labels) for s in SPLITS}, "sha256": checksums,
            "content": {s: split_content(splits[s].images, splits[s].labels) for s in SPLITS},
            "source": {"kind": kind, "path": str(src.resolve()), "fingerprint": stamp},
            "image": {"shape": [32, 32, 3], "dtype": "uint8", "write_mode": "raw"}}
    try:
        atomic_write_bytes(data_dir / METADATA, json.dumps(meta, indent=2).encode())
    except OSError as e:
        raise DataError(f"{data_dir}: cannot write {METADATA} ({e.strerror or e})") from None
    return meta
