"""Is the model wrong, or the label? What the report says of each test error's label: cleanlab's
flag (training wrote it into errors.json), and, where the test images are in CIFAR-10's official
order, what people said: the CIFAR-10H counts (Peterson and others, 2019: about 50 people per
test image) and the published audit of the test set (cleanlab/label-errors: 275 images checked
by five reviewers each). Those two files are fetched once at run time, checked against the
SHA-256 recorded here and kept beside the betons; their licences do not let them be committed
(CIFAR-10H: CC BY-NC-SA 4.0; the audit: Apache-2.0). Offline, or for an image folder, whose
order is unknown, they are skipped with one line."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..records import TestError

# source kinds whose test split is in the official order (the pickled batches)
OFFICIAL_ORDER = ("python-archive", "batches-folder")
HUMAN_DIR = "human_labels"  # beside the betons
OFFLINE_ENV = "FFCV_RESNET_OFFLINE"  # set (to anything): never fetch, use what is cached


@dataclass(frozen=True)
class HumanFile:
    """A file of human labels: where it is published, its SHA-256, its licence."""
    name: str
    url: str
    sha256: str
    licence: str


COUNTS = HumanFile(
    "cifar10h-counts.npy",
    "https://raw.githubusercontent.com/jcpeterson/cifar-10h/master/data/cifar10h-counts.npy",
    "9b36b4550349af56c79083356312eb4af856cc5fd3caf1f669d40b9d0bbb69ff",
    "CIFAR-10H, CC BY-NC-SA 4.0")
AUDIT = HumanFile(
    "cifar10_mturk.json",
    "https://raw.githubusercontent.com/cleanlab/label-errors/main/mturk/cifar10_mturk.json",
    "81b2c16c9eee060d6cc2390f6bbce1e0e7be0a050574be5177c9428f3596b5b5",
    "cleanlab/label-errors, Apache-2.0")
FILES = (COUNTS, AUDIT)
AUDIT_KEPT = 3  # of the audit's five reviewers: fewer keeping the given label, the label is wrong


@dataclass
class HumanLabels:
    """What people said of every test image (official order)."""
    counts: np.ndarray  # (N, 10) int: CIFAR-10H's votes per class
    audited: np.ndarray  # (N,) bool: the audit checked the image
    audit_wrong: np.ndarray  # (N,) bool: fewer than AUDIT_KEPT of its reviewers kept the label


@dataclass
class LabelNote:
    """What the report says of one error's label."""
    cleanlab: bool | None  # cleanlab flags it (None: not looked for)
    human: list[int] | None  # CIFAR-10H's votes per class
    audit: str | None  # "label wrong", "checked" (the audit kept the label), None

    def suspect(self, true: int) -> bool:
        """cleanlab doubts it, the audit found it wrong, or most people chose another class."""
        return bool(self.cleanlab) or self.audit == "label wrong" or (
            self.human is not None and int(np.argmax(self.human)) != true)


class _Mismatch(Exception):
    """A download whose SHA-256 is not the recorded one."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fetched(f: HumanFile, folder: Path, log) -> tuple[Path | None, str]:
    """The file in `folder`, downloaded once and checked; (None, why) when it cannot be."""
    target = folder / f.name
    if target.is_file():
        if _sha256(target) == f.sha256:
            return target, ""
        target.unlink()  # damaged or foreign: fetched again
    if os.environ.get(OFFLINE_ENV):
        return None, f"{f.name} is not in {folder} and {OFFLINE_ENV} forbids fetching it"
    try:
        folder.mkdir(exist_ok=True)
        log(f"downloading {f.url} -> {target} ({f.licence})")
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(f.url, timeout=10) as r, open(tmp, "wb") as out:
                shutil.copyfileobj(r, out, 1 << 20)
            if _sha256(tmp) != f.sha256:
                raise _Mismatch()  # leaving the block by an error: the download is removed
    except _Mismatch:
        return None, f"{f.url}: the download failed its SHA-256 check ({f.sha256}); removed"
    except OSError as e:
        why = getattr(e, "reason", None) or e.strerror or e
        return None, f"could not fetch {f.url} ({why}): offline?"
    return target, ""


def human_labels(data_dir: Path, meta: dict, log=print) -> tuple[HumanLabels | None, str]:
    """Every test image's human labels, or None, and the one line saying what was done."""
    kind = meta["source"]["kind"]
    if kind not in OFFICIAL_ORDER:
        return None, (f"human labels skipped: the betons come from an {kind}, whose test order "
                      "is not known to be CIFAR-10's official one")
    folder = Path(data_dir) / HUMAN_DIR
    paths = {}
    for f in FILES:
        paths[f.name], why = _fetched(f, folder, log)
        if paths[f.name] is None:
            return None, f"human labels skipped: {why}"
    n = meta["counts"]["test"]
    try:
        counts = np.load(paths[COUNTS.name], allow_pickle=False)
        audit = json.loads(paths[AUDIT.name].read_text())
        ids = np.array([a["id"] for a in audit], dtype=np.int64)
        kept = np.array([a["mturk"]["given"] for a in audit], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"human labels skipped: {folder} holds unreadable files ({e})"
    if counts.shape != (n, len(meta["classes"])) or (len(ids) and ids.max() >= n):
        return None, (f"human labels skipped: they cover {counts.shape[0]} test images, the "
                      f"betons {n}")
    audited, wrong = np.zeros(n, bool), np.zeros(n, bool)
    audited[ids] = True
    wrong[ids[kept < AUDIT_KEPT]] = True
    return (HumanLabels(counts.astype(np.int64), audited, wrong),
            f"human labels: CIFAR-10H ({COUNTS.licence}) and the published audit "
            f"({AUDIT.licence}), from {folder}")


def label_notes(errors: list[TestError], human: HumanLabels | None) -> dict[int, LabelNote]:
    """{test index: what is known of its label} for every error."""
    notes = {}
    for e in errors:
        audit = None
        if human is not None and human.audited[e.index]:
            audit = "label wrong" if human.audit_wrong[e.index] else "checked"
        notes[e.index] = LabelNote(e.label_issue,
                                   human.counts[e.index].tolist() if human is not None else None,
                                   audit)
    return notes


def label_summary(errors: list[TestError], notes: dict[int, LabelNote], human_said: str) -> dict:
    """The report's counts: label-suspect errors, cleanlab's flags, where most people chose the
    model's class, the audit's marks; and what was done about human labels."""
    humans = [e for e in errors if notes[e.index].human is not None]
    return {"suspect": sum(notes[e.index].suspect(e.true) for e in errors),
            "cleanlab": (None if any(notes[e.index].cleanlab is None for e in errors) and errors
                         else sum(bool(notes[e.index].cleanlab) for e in errors)),
            "humans_chose_model": (sum(int(np.argmax(notes[e.index].human)) == e.predicted
                                       for e in humans) if humans else None),
            "audited": sum(notes[e.index].audit is not None for e in errors),
            "audit_wrong": sum(notes[e.index].audit == "label wrong" for e in errors),
            "human_labels": human_said}


@dataclass
class LabelEvidence:
    """What the report shows of the labels: each error's note and the counts over them."""
    notes: dict[int, LabelNote]
    summary: dict

    @classmethod
    def of(cls, errors: list[TestError], human: HumanLabels | None,
           human_said: str) -> "LabelEvidence":
        notes = label_notes(errors, human)
        return cls(notes, label_summary(errors, notes, human_said))

    def row(self, index: int, true: int) -> dict:
        """The report's JSON of one error's label."""
        n = self.notes.get(index)
        if n is None:
            return {"cleanlab": None, "human": None, "audit": None, "suspect": False}
        return {"cleanlab": n.cleanlab, "human": n.human, "audit": n.audit,
                "suspect": n.suspect(true)}
