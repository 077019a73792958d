"""The runs a comparison reads, checked before anything is computed: each a complete run (its
files of one run id), all evaluated on one test set, none on both sides; and what each says
about every test image (right or wrong, and its guess)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import flatten
from ..errors import UserError
from ..records import Errors, Metrics, TestSet, read_json
from ..run_folder import CONFIG, ERRORS, EXPLAIN_JSON, METRICS, read_config, read_run_id


@dataclass(frozen=True)
class RunRecord:
    """One complete run as a comparison reads it."""
    path: Path
    run_id: str
    metrics: Metrics
    test: TestSet
    classes: list[str]
    errors: Errors
    config: dict  # {"section.name": value}, the run id left out
    explained_layer: str | None  # the layer of its explain pass, None when not explained

    def indices(self) -> np.ndarray:
        """The test indices it was evaluated on, in order."""
        return np.asarray(self.test.subset if self.test.subset else range(self.test.count))

    def correct(self) -> np.ndarray:
        """(N,) bool over `indices()`: the image was classified right."""
        wrong = {e.index for e in self.errors.errors}
        return np.array([i not in wrong for i in self.indices()], dtype=bool)

    def predicted(self) -> dict[int, int]:
        """The class it guessed for each image it got wrong."""
        return {e.index: e.predicted for e in self.errors.errors}


def read_run(path: Path) -> RunRecord:
    """A complete run's record; UserError naming the folder when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder")
    if not (path / CONFIG).is_file():
        raise UserError(f"{path}: not a run folder (no {CONFIG})")
    if not (path / METRICS).is_file():
        raise UserError(f"{path}: an incomplete run (no {METRICS}): training did not finish")
    metrics = Metrics.from_dict(read_json(path / METRICS, "metrics"), str(path / METRICS))
    errors = Errors.from_dict(read_json(path / ERRORS, "errors file"), str(path / ERRORS))
    config, config_id = read_config(path), read_run_id(path)
    if len({metrics.run_id, errors.run_id, config_id}) != 1:
        raise UserError(f"{path}: files of different runs ({METRICS} is run {metrics.run_id}, "
                        f"{ERRORS} {errors.run_id}, {CONFIG} {config_id})")
    if len(errors.errors) != metrics.errors:
        raise UserError(f"{path}: {ERRORS} holds {len(errors.errors)} errors, {METRICS} says "
                        f"{metrics.errors}: an incomplete or edited set of files")
    layer = None
    if (path / EXPLAIN_JSON).is_file():
        ex = read_json(path / EXPLAIN_JSON, "explain record")
        layer = ex.get("layer") if isinstance(ex, dict) and ex.get("run_id") == metrics.run_id \
            else None
    return RunRecord(path, metrics.run_id, metrics, errors.test, list(errors.classes), errors,
                     _as_read_now(config), layer)


def _as_read_now(config: dict) -> dict:
    """{"section.name": value} of a run's config.yaml as this version reads it: an old run's
    `flip: true` is `random`, an option it predates takes its default (what the run did)."""
    from ..config import ConfigError, as_dict, parse
    from ..finished.settings import TrainSettings
    raw = flatten(config)
    try:
        return flatten(as_dict(parse(TrainSettings, [], base=raw)))
    except ConfigError:  # a config this version cannot read: compared as written
        return raw


def read_sides(a: list[str], b: list[str],
               asserted: bool = False) -> tuple[list[RunRecord], list[RunRecord]]:
    """Both sides' runs, checked: non-empty, complete, no run twice or on both sides (by folder
    or by run id), every run on the same test set of the same classes. `asserted`: the user
    says the test sets are the same where the records cannot show it (older records name the
    source by its path and time): their counts, subset and per-class counts must still agree."""
    for name, side in (("a", a), ("b", b)):
        if not side:
            raise UserError(f"--compare.{name}: no run given")
    folders = [Path(p).resolve() for p in (*a, *b)]
    seen: dict[Path, str] = {}
    for p, label in zip(folders, ["a"] * len(a) + ["b"] * len(b)):
        if p in seen:
            where = "on both sides" if seen[p] != label else f"twice in --compare.{label}"
            raise UserError(f"{p}: the same run {where}")
        seen[p] = label
    runs = [read_run(Path(p)) for p in (*a, *b)]
    ids: dict[str, Path] = {}
    for r in runs:
        if r.run_id in ids:
            raise UserError(f"{r.path}: run {r.run_id} is also {ids[r.run_id]} (a copy): the same "
                            "run twice")
        ids[r.run_id] = r.path
    first = runs[0]
    for r in runs[1:]:
        if asserted:
            if (r.test.subset, r.test.count, r.test.class_counts) != (
                    first.test.subset, first.test.count, first.test.class_counts):
                raise UserError(f"{r.path}: evaluated on another test set than {first.path} "
                                "(another subset, count or class counts), even as asserted")
        elif not r.test.same_images_as(first.test):
            legacy = not (r.test.content and first.test.content)
            raise UserError(f"{r.path}: evaluated on another test set than {first.path} "
                            "(other images, subset or count): the runs cannot be paired"
                            + ("; one of them names its data only by the source's path and "
                               "time: --compare.same_test_set true pairs them if you know "
                               "they share the test images (checked against --data.dir)"
                               if legacy else ""))
        if r.classes != first.classes:
            raise UserError(f"{r.path}: classes differ from {first.path}'s")
    return runs[:len(a)], runs[len(a):]
