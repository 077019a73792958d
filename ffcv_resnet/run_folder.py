"""The run folder's life cycle: one run per folder, each file stamped with the run's id.

A run writes config.yaml first (it names the run id), then history.jsonl and last.pt after every
epoch, then model.pt, errors.json, curves.png, train_dynamics.npz (every training image's
dynamics) and test_probs.npz (every test image's probabilities), and metrics.json last: a run is
complete exactly when metrics.json exists. explain.py adds its outputs (EXPLAIN_FILES) with the same id.
A process holds the folder's lock (.lock) while it trains or explains.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError, option, require, require_range
from .errors import UserError
from .io import atomic_write_bytes
from .records import dumps

CONFIG, HISTORY, STATE = "config.yaml", "history.jsonl", "last.pt"
CHECKPOINT, ERRORS, CURVES, METRICS = "model.pt", "errors.json", "curves.png", "metrics.json"
DYNAMICS, TEST_PROBS = "train_dynamics.npz", "test_probs.npz"  # every training image; the test
TRAIN_FILES = (CONFIG, HISTORY, STATE, CHECKPOINT, ERRORS, CURVES, DYNAMICS, TEST_PROBS, METRICS)
# explain's outputs; explain.json is written last: its presence marks a finished pass
GALLERY, MANIFEST, SUMMARY, OVERVIEW = "gallery", "manifest.csv", "summary.png", "overview.png"
REPORT, SCREENSHOT, EXPLAIN_JSON = "report.html", "report.png", "explain.json"
SUSPECTS_HTML, SUSPECTS_CSV = "suspect_labels.html", "suspect_labels.csv"
EXPLAIN_FILES = (GALLERY, MANIFEST, SUMMARY, OVERVIEW, REPORT, SCREENSHOT, SUSPECTS_HTML,
                 SUSPECTS_CSV, EXPLAIN_JSON)
LOCK = ".lock"


def show_progress(setting: str, device_type: str) -> bool:
    """Whether to draw a progress bar: --run.progress on or off as said; auto draws one only on
    the CPU (on a GPU an epoch takes a second) and only when stderr is a terminal: redrawn
    with carriage returns, a bar would fill a log file or a pipe with hundreds of lines."""
    if setting != "auto":
        return setting == "on"
    if device_type != "cpu" or sys.stderr is None:
        return False
    try:
        return sys.stderr.isatty()
    except (ValueError, OSError):  # closed
        return False


@dataclass(frozen=True)
class RunConfig:
    """Run: the run folder and what is printed"""
    dir: str = option("runs/main", "run folder: config, history, checkpoints, metrics, errors, "
                      "figures; one run per folder", resumable=True)
    overwrite: bool = option(False, "replace the run already in --run.dir (its files, explain "
                             "outputs included, are removed first)", resumable=True)
    resume: bool = option(False, "continue the incomplete run in --run.dir from its last "
                          "complete epoch (last.pt), with its own recipe", resumable=True)
    checkpoint_every: int = option(1, "write last.pt, the resume point, every N epochs "
                                   "(0: never)", resumable=True)
    keep_last: bool = option(False, "keep last.pt (the resume point, 89 MB) once the run is "
                             "complete", resumable=True)
    summary: bool = option(False, "print the model's layer-by-layer summary", resumable=True)
    progress: str = option("auto", "progress bar within epochs (auto: on the CPU when stderr "
                           "is a terminal, so a log file gets none)",
                           ("auto", "on", "off"), resumable=True)

    def validate(self, prefix: str) -> None:
        require(bool(self.dir.strip()), f"{prefix}.dir", self.dir, "a folder")
        if Path(self.dir).exists() and not Path(self.dir).is_dir():
            raise ConfigError(f"--{prefix}.dir {self.dir}: exists and is not a folder")
        require_range(prefix, self, "checkpoint_every", 0)
        if self.overwrite and self.resume:
            raise ConfigError(f"--{prefix}.overwrite and --{prefix}.resume exclude each other")


@dataclass(frozen=True)
class FinishedRunConfig:
    """Run: a finished training run"""
    dir: str = option("runs/main", "run folder of a complete training run")


def new_run_id() -> str:
    """Sortable and unique: the start time plus random bits."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def write_yaml(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), yaml.safe_dump(obj, sort_keys=False).encode())


def write_history(path: Path, run_id: str, rows: list[dict]) -> None:
    """All epochs so far, one strict JSON line each (rewritten whole, atomically, every epoch)."""
    lines = "".join(dumps({"run_id": run_id, **r}, indent=None) + "\n" for r in rows)
    atomic_write_bytes(Path(path), lines.encode())


def read_history(path: Path) -> list[dict]:
    """The rows of history.jsonl ([] when absent); UserError when damaged."""
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable history ({e})") from None


def _is_ours(name: str) -> bool:
    hidden_temp = name.startswith(".") and name.endswith((".tmp", ".old"))
    return name in TRAIN_FILES or name in EXPLAIN_FILES or hidden_temp


def foreign_files(folder: Path) -> list[str]:
    """Names in `folder` that no run or explain pass writes (its lock aside), sorted."""
    return sorted(n for n in os.listdir(folder) if not _is_ours(n) and n != LOCK)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _config_doc(run_dir: Path) -> dict:
    """config.yaml as written, run id included (UserError when missing or damaged)."""
    path = Path(run_dir) / CONFIG
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir}: no run here ({CONFIG} missing)") from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"{path}: unreadable run config ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or "run_id" not in doc:
        raise UserError(f"{path}: not a run config (no run_id)")
    return doc


def read_run_id(run_dir: Path) -> str:
    """The run id config.yaml names (UserError when missing or damaged)."""
    return _config_doc(run_dir)["run_id"]


def read_config(run_dir: Path) -> dict:
    """A run folder's config.yaml without its run id (UserError when missing or damaged)."""
    return {k: v for k, v in _config_doc(run_dir).items() if k != "run_id"}


def enclosing_run(folder: Path) -> Path | None:
    """The run folder that `folder` is, or is inside, if any (a command that writes elsewhere
    refuses it: a run folder holds one run's files and nothing else)."""
    folder = Path(folder).resolve()
    for p in (folder, *folder.parents):
        if (p / CONFIG).is_file():
            return p
    return None


def check_output_folder(folder: Path, option_name: str) -> None:
    """UserError (one line naming --`option_name`) unless a command may write `folder`: not a
    file, not a run folder nor inside one, and its nearest existing ancestor writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--{option_name} {folder}: exists and is not a folder")
    run = enclosing_run(folder)
    if run is not None:
        raise UserError(f"--{option_name} {folder}: inside the run folder {run}; choose "
                        "another folder")
    existing = next(p for p in (folder.resolve(), *folder.resolve().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--{option_name} {folder}: cannot be written")


class RunFolder:
    """A run folder held under an exclusive lock for as long as this object lives."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a folder")
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            foreign = self.foreign()  # a folder that is not a run's gets nothing written into it
            if foreign:
                raise UserError(f"{self.path}: holds files that are not a run's ({foreign[0]}, "
                                "...); choose a new or empty folder")
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise UserError(f"{self.path}: cannot be used as a run folder "
                            f"({e.strerror or e})") from None
        self._lock = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._lock.read().strip() or "?"
            self._lock.close()
            raise UserError(f"{self.path}: in use by another process (pid {pid})") from None
        self._lock.truncate(0)
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    def ours(self) -> list[str]:
        """Names of run and explain files present (their hidden temporaries included)."""
        return sorted(n for n in os.listdir(self.path) if _is_ours(n))

    def foreign(self) -> list[str]:
        return foreign_files(self.path)

    def run_id(self) -> str | None:
        """The id in config.yaml, or None when there is none."""
        try:
            return _config_doc(self.path)["run_id"]
        except UserError:
            return None

    def complete(self) -> bool:
        return (self.path / METRICS).is_file()

    def describe(self) -> str:
        """'run ID (complete)' or 'run ID (incomplete: N epochs done)' for messages."""
        done = len(read_history(self.path / HISTORY))
        state = "complete" if self.complete() else \
            f"incomplete: {done} epoch{'' if done == 1 else 's'} done"
        return f"run {self.run_id() or '(unknown id)'} ({state})"

    def claim(self, overwrite: bool, resume: bool) -> None:
        """Check that a run may start here: refuse another run unless overwrite or resume."""
        ours = self.ours()
        if resume:
            if not ours:
                raise UserError(f"{self.path}: no run to resume")
            if self.complete():
                raise UserError(f"{self.path}: {self.describe()}: nothing to resume")
            if not (self.path / STATE).is_file():
                raise UserError(f"{self.path}: {self.describe()} has no {STATE} to resume from "
                                "(it stopped before its first checkpoint); --run.overwrite "
                                "true starts it again")
            for name in ours:  # what a killed process left half-written
                if name.startswith("."):
                    _remove(self.path / name)
        elif ours and not overwrite:
            raise UserError(f"{self.path}: holds {self.describe()}; --run.resume true continues "
                            "it, --run.overwrite true replaces it, or choose another --run.dir")

    def clear(self) -> None:
        """Remove every run and explain file (the folder and its lock stay)."""
        for name in self.ours():
            _remove(self.path / name)

    def start(self, run_id: str, config: dict) -> None:
        """A new run: remove the old files, then write config.yaml naming `run_id`."""
        self.clear()
        write_yaml(self.path / CONFIG, {"run_id": run_id, **config})

    def release(self) -> None:
        """Unlock; a folder this object created and nothing was written to is removed again."""
        if self.created and os.listdir(self.path) == [LOCK]:
            (self.path / LOCK).unlink(missing_ok=True)
            self.path.rmdir()
        self._lock.close()

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
