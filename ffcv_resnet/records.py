"""The run contract as typed records: the test set a run was evaluated on, its metrics and errors.

Every JSON file the project writes goes through `write_json`/`read_json`: strict JSON (a NaN or
inf is an error, never written), atomically, one-line errors on read.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import atomic_write_bytes


def dumps(obj: Any, indent: int | None = 1) -> str:
    """Strict JSON: ValueError on NaN or inf instead of writing what other readers reject."""
    return json.dumps(obj, indent=indent, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (dumps(obj) + "\n").encode())


def _no_constants(word: str):
    raise ValueError(f"{word} is not JSON")


def read_json(path: Path, what: str) -> Any:
    """A strict JSON file, or a one-line UserError naming it."""
    try:
        return json.loads(Path(path).read_text(), parse_constant=_no_constants)
    except FileNotFoundError:
        raise UserError(f"{path}: no {what}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable {what} ({e})") from None


def from_fields(cls, d: Any, where: str):
    """A dataclass from a dict holding its fields (those with defaults may be absent, as in
    files written before they existed) and no others; UserError otherwise."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    needed = {f.name for f in fields if f.default is dataclasses.MISSING
              and f.default_factory is dataclasses.MISSING}
    if not isinstance(d, dict) or not needed <= set(d) <= names:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise UserError(f"{where}: not a {cls.__name__} record (fields {got})")
    return cls(**d)


@dataclass(frozen=True)
class TestSet:
    """What a run was evaluated on: explain checks the test beton against it."""
    count: int
    fingerprint: str  # of the source the betons were made from
    subset: list[int] | None  # test indices of a fixed subset, None for the whole split
    tta: str  # none, flip or flip_translate
    class_counts: list[int]
    # SHA-256 (16 hex) of the whole test split's pixels and labels in order: the same images
    # wherever and whenever they were prepared; "" in records written before it existed
    content: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "TestSet":
        return from_fields(cls, d, where)

    def same_images_as(self, other: "TestSet") -> bool:
        """Evaluated on the same test images: by content where both records name it, else (an
        older record) by the fingerprint of the source the betons were made from."""
        same = (self.content == other.content if self.content and other.content
                else self.fingerprint == other.fingerprint)
        return same and self.subset == other.subset and self.count == other.count


@dataclass(frozen=True)
class TestError:
    """One misclassified test image."""
    index: int  # in the test split
    true: int
    predicted: int
    confidence: float  # p(predicted)
    # cleanlab flags its label as doubtful (finished/label_issues.py); None: not looked for
    label_issue: bool | None = None
    # faithfulness scores an older explain wrote into errors.json (read, never written now)
    scores: dict | None = None


@dataclass(frozen=True)
class Errors:
    """errors.json: every test error of a run."""
    run_id: str
    classes: list[str]
    test: TestSet
    errors: list[TestError]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for row in d["errors"]:  # what was not computed is left out, not written as null
            for key in ("label_issue", "scores"):
                if row[key] is None:
                    del row[key]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Errors":
        e = from_fields(cls, d, where)
        rows = [from_fields(TestError, r, where) for r in e.errors]
        e = dataclasses.replace(e, test=TestSet.from_dict(e.test, where), errors=rows)
        e.check(where)
        return e

    def check(self, where: str) -> None:
        """UserError unless every row is an error of this test set: known classes, predicted
        unlike true, an index the test set holds, each image once."""
        k, indices = len(self.classes), set(self.test.subset or range(self.test.count))
        for r in self.errors:
            if not (0 <= r.true < k and 0 <= r.predicted < k and r.true != r.predicted
                    and r.index in indices and 0 <= r.confidence <= 1):
                raise UserError(f"{where}: not an error of this run's test set: {r}")
        if len({r.index for r in self.errors}) != len(self.errors):
            raise UserError(f"{where}: an image is listed twice")


@dataclass(frozen=True)
class Session:
    """One process's share of a run (a resumed run has several)."""
    first_epoch: int  # the first epoch this process trained
    last_epoch: int
    compile_seconds: float
    startup_seconds: float  # from the process's start to its first training step
    wall_seconds: float  # from start-up to its last checkpoint or to the end


@dataclass(frozen=True)
class Metrics:
    """metrics.json, the last file a run writes: its presence marks the run complete."""
    run_id: str
    test_accuracy: float  # a fraction
    test_loss: float
    per_class_accuracy: dict[str, float | None]  # None: no test image of that class
    errors: int
    epochs: int
    train_seconds: float  # sum of the epochs' synchronised training times
    eval_seconds: float
    compile_seconds: float  # summed over sessions
    startup_seconds: float  # the first session's time to its first training step
    checkpoint_seconds: float
    total_seconds: float  # summed wall time of every session (time lost to a kill not counted)
    images_per_second: float
    train_images: int
    test_images: int
    peak_lr: float  # what the optimiser used, after batch scaling
    device: str
    torch: str
    seed: int
    precision: str
    compile: str
    compile_mode: str
    loader: str
    data_source: str
    sessions: list[Session] = field(default_factory=list)
    processes: int = 1  # training processes (torchrun); device names what each one ran on

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Metrics":
        m = from_fields(cls, d, where)
        return dataclasses.replace(m, sessions=[from_fields(Session, s, where)
                                                for s in m.sessions])
