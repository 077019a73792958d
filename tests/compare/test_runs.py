"""The sides of a comparison: incomplete runs, copies, the same run twice and other test sets are
one line each."""
from __future__ import annotations

import shutil

import pytest

from conftest import fake_run, TWO_CLASS_LABELS

from ffcv_resnet.compare.runs import read_sides
from ffcv_resnet.errors import UserError


@pytest.mark.parametrize("case,message", [
    ("incomplete", "an incomplete run (no metrics.json)"),
    ("not-a-run", "not a run folder (no config.yaml)"),
    ("missing", "no such run folder"),
    ("twice", "the same run on both sides"),
    ("copy", "(a copy): the same run twice"),
    ("other-test", "evaluated on another test set"),
])
def test_bad_sides_are_one_line(case, message, tmp_path):
    a = fake_run(tmp_path, "a", {0: 1}, TWO_CLASS_LABELS, "ra")
    b = fake_run(tmp_path, "b", {1: 1}, TWO_CLASS_LABELS, "rb")
    if case == "incomplete":
        (b / "metrics.json").unlink()
    elif case == "not-a-run":
        b = tmp_path / "photos"
        b.mkdir()
    elif case == "missing":
        b = tmp_path / "nowhere"
    elif case == "twice":
        b = a
    elif case == "copy":
        b = tmp_path / "copy"
        shutil.copytree(a, b)
    else:
        shutil.rmtree(b)
        b = fake_run(tmp_path, "b", {1: 1}, TWO_CLASS_LABELS, "rb", test={
            "count": 100, "fingerprint": "0" * 16, "subset": None, "tta": "flip",
            "class_counts": [50, 50]})
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_sides([str(a)], [str(b)])
