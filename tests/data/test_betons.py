"""Beton checks: the header layout mirrors FFCV's, damaged or tampered betons are caught before
use."""
from __future__ import annotations

import os

import pytest

from conftest import CPU, QUIET, run_script

from ffcv_resnet.data.betons import beton_path, checked_metadata
from ffcv_resnet.data.convert import prepare
from ffcv_resnet.data.loaders import FfcvBatches, load_all
from ffcv_resnet.errors import DataError


def _damage(path, offset, n=4096):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + n] = os.urandom(min(n, len(raw) - offset))
    path.write_bytes(bytes(raw))


def test_header_layout_mirrors_ffcv():
    from ffcv import types
    from ffcv_resnet.data import betons
    assert betons.HeaderType == types.HeaderType
    assert betons.ALLOC_TABLE_TYPE == types.ALLOC_TABLE_TYPE
    assert betons.CURRENT_VERSION == types.CURRENT_VERSION


@pytest.mark.parametrize("where", ["data", "after-header"])
def test_damaged_betons_are_caught_before_use_and_rebuilt(where, sources, tmp_path):
    d, src = tmp_path / "d", str(sources["batches-folder"])
    prepare(d, src, **QUIET)
    path = beton_path(d, "test")
    size = path.stat().st_size
    _damage(path, 24 if where == "after-header" else size // 2)  # same size, other bytes
    assert path.stat().st_size == size
    with pytest.raises(DataError, match=f"{path}: .*(damaged beton|truncated|not a beton)"):
        checked_metadata(d)
    with pytest.raises(DataError, match="test.beton"):
        load_all(path, CPU)
    r = run_script("scripts/train.py", "--data.dir", d, "--run.dir", tmp_path / "r",
                   "--training.epochs", "1", "--training.batch_size", "8", timeout=120)
    assert r.returncode == 2 and "test.beton" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    said = []
    prepare(d, src, log=said.append)  # has the source: rebuilds instead of failing
    assert any("rebuilding" in s for s in said)
    assert checked_metadata(d)["counts"]["test"] == 20
    _damage(beton_path(d, "train"), beton_path(d, "train").stat().st_size // 2)
    said = []
    prepare(d, "", log=said.append)  # no source named: the recorded one is used
    assert any("rebuilding from" in s for s in said)
    for split in ("train", "test"):  # nothing left damaged: both load and check out
        x, y = load_all(beton_path(d, split), CPU)
        assert len(y) == checked_metadata(d)["counts"][split]
    # a beton moved away from its metadata is caught: nothing vouches for it there
    with pytest.raises(DataError, match="elsewhere.beton: no checksum for it in .*cifar10.json"):
        FfcvBatches(path.rename(tmp_path / "elsewhere.beton"), 4, CPU)


def test_rerun_after_damage_without_the_source_says_what_to_do(sources, tmp_path):
    import shutil
    src = tmp_path / "copy"
    shutil.copytree(sources["batches-folder"], src)
    prepare(tmp_path / "d", str(src), **QUIET)
    shutil.rmtree(src)
    _damage(beton_path(tmp_path / "d", "test"), 300)
    with pytest.raises(DataError, match="test.beton: damaged beton .* is gone: rebuild with "
                                        "--data.source"):
        prepare(tmp_path / "d", "", **QUIET)


def test_tampered_metadata_is_not_trusted_and_an_interrupted_rebuild_resumes(sources, tmp_path):
    import json
    import shutil
    d = tmp_path / "d"
    prepare(d, str(sources["batches-folder"]), **QUIET)
    meta = json.loads((d / "cifar10.json").read_text())
    (d / "cifar10.json").write_text(json.dumps({**meta, "classes": ["a"]}))
    with pytest.raises(DataError, match="older or unreadable cifar10.json"):
        checked_metadata(d)
    (d / "cifar10.json").write_text(json.dumps(meta))
    other = tmp_path / "other"  # a rebuild killed after it replaced train.beton
    prepare(other, str(sources["image-folder"]), **QUIET)
    _damage(beton_path(other, "train"), 100)
    shutil.copy(beton_path(other, "train"), beton_path(d, "train"))
    said = []
    prepare(d, "", log=said.append)  # the metadata kept its source: rebuilt from it
    assert any("rebuilding from" in s for s in said) and checked_metadata(d)
