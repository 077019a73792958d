"""Which runs can be paired: by the content of their test images, and older records only when
asserted and checked against the data; a record without weights compared without tiles."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


from ffcv_resnet.compare.runs import read_sides
from ffcv_resnet.errors import UserError


def _edit_test_set(run: Path, **changes) -> None:
    e = json.loads((run / "errors.json").read_text())
    e["test"].update(changes)
    e["test"] = {k: v for k, v in e["test"].items() if v is not ...}
    (run / "errors.json").write_text(json.dumps(e))


def _compare(args, tmp_path):
    from ffcv_resnet.compare.compare import CompareSettings, compare_runs
    from ffcv_resnet.config import parse
    return compare_runs(parse(CompareSettings, [str(x) for x in args]), log=lambda *_: None)


def test_runs_pair_by_the_content_of_their_test_images(pair, learnable_data, tmp_path):
    """A run names its test images by content: a source moved or copied (another fingerprint)
    still pairs, other images do not."""
    from ffcv_resnet.data.betons import beton_path, split_content
    from ffcv_resnet.data.loaders import load_all
    import torch
    a, b, _, _ = pair
    images, labels = load_all(beton_path(learnable_data, "test"), torch.device("cpu"))
    content = split_content(images.permute(0, 2, 3, 1).numpy(), labels.numpy())
    for run in (a, b):
        assert json.loads((run / "errors.json").read_text())["test"]["content"] == content
    moved = tmp_path / "moved"
    shutil.copytree(b, moved, ignore=shutil.ignore_patterns(".lock"))
    _edit_test_set(moved, fingerprint="0" * 16)  # the source's path or time changed
    c = _compare(["--compare.a", a, "--compare.b", moved, "--compare.out", tmp_path / "o",
                  "--data.dir", learnable_data], tmp_path)
    assert c["test_set"] == "the same test images (by content)"
    _edit_test_set(moved, content="1" * 16)
    with pytest.raises(UserError, match="evaluated on another test set"):
        read_sides([str(a)], [str(moved)])


def test_older_records_pair_only_when_asserted_and_checked_against_the_data(
        pair, learnable_data, tmp_path):
    """Records without a content identity (and another source fingerprint, as a copy of the
    data made in another session) are refused with the way out; asserted, their labels are
    checked against the data; a record without model.pt is compared without tiles."""
    a, b, _, _ = pair
    old = {}
    for name, run in (("a", a), ("b", b)):
        old[name] = tmp_path / f"old-{name}"
        shutil.copytree(run, old[name], ignore=shutil.ignore_patterns(".lock"))
        _edit_test_set(old[name], content=..., fingerprint=name * 16)
    (old["a"] / "model.pt").unlink()  # a committed record: its JSON files, no weights
    args = ["--compare.a", old["a"], "--compare.b", old["b"], "--compare.out", tmp_path / "o",
            "--data.dir", learnable_data]
    with pytest.raises(UserError, match="--compare.same_test_set true pairs them"):
        _compare(args, tmp_path)
    c = _compare([*args, "--compare.same_test_set", "true"], tmp_path)
    assert c["test_set"].startswith("asserted by --compare.same_test_set")
    assert "has no model.pt" in c["tiles_left_out"] and c["shown"] == [] and not c["maps"]
    saved = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert saved["table"] == c["table"] and saved["tiles_left_out"] == c["tiles_left_out"]
    e = json.loads((old["b"] / "errors.json").read_text())
    assert e["errors"], "the toy run made no error to tamper with"
    e["errors"][0]["true"] = (e["errors"][0]["true"] + 1) % 10  # another data set's label
    (old["b"] / "errors.json").write_text(json.dumps(e))
    with pytest.raises(UserError, match="not the same test set"):
        _compare([*args[:5], tmp_path / "o2", *args[6:], "--compare.same_test_set", "true"],
                 tmp_path)
