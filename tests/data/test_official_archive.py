"""The official CIFAR-10 archive's byte layout (Python 2 pickles), read from its tar, its
folder and the download."""
from __future__ import annotations

import hashlib
import pickle
import pickletools
import warnings

import numpy as np
import pytest

import py2pickle
from conftest import LocalFiles, batch_bytes, run_script, tar_folder, write_batches

from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.data.pickled import parse_batch


MEMBERS = {f"cifar-10-batches-py/{n}" for n in
           ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
            "test_batch", "batches.meta", "readme.html"]}


@pytest.fixture
def official(tmp_path, tiny):
    """cifar-10-python.tar.gz in the official layout and its extracted folder."""
    folder = write_batches(tmp_path / "x" / "cifar-10-batches-py", tiny, "py2")
    archive = tar_folder(folder, tmp_path / "dl" / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    import tarfile
    with tarfile.open(archive) as tar:
        assert {m.name for m in tar if m.isfile()} == MEMBERS
    return {"archive": archive, "folder": folder}


def _assert_betons_hold(data_dir, tiny):
    from ffcv_resnet.data.loaders import load_all
    import torch
    for split in ("train", "test"):
        images, labels = load_all(beton_path(data_dir, split), torch.device("cpu"), batch_size=16)
        np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), tiny[split].images)
        np.testing.assert_array_equal(labels.numpy(), tiny[split].labels)


def _prepare_downloading(url, md5, data_dir):
    """prepare_data.py exactly as a user runs it (no --data.source), with the download's URL
    and MD5 pointed at the stand-in."""
    code = ("import runpy, sys, ffcv_resnet.data.sources as s; "
            f"s.URL, s.MD5 = {url!r}, {md5!r}; "
            "sys.argv = ['scripts/prepare_data.py', '--data.dir', sys.argv[1]]; "
            "runpy.run_path('scripts/prepare_data.py', run_name='__main__')")
    return run_script("-c", code, data_dir, timeout=300)


def test_the_fixture_is_what_python_2_wrote(tiny):
    """Opcodes as in the real files, and the latin-1 unpickling torchvision uses reads it."""
    meta = py2pickle.batches_meta()
    assert len(meta) == 158  # the real batches.meta, byte for byte in size and opening
    assert meta.startswith(bytes.fromhex("80027d71012855136e756d5f63617365735f7065725f6261746368"))
    raw = batch_bytes(tiny["test"], 0, 20, "py2", "testing batch 1 of 1")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    names = {name for name, _ in ops}
    assert {"SHORT_BINSTRING", "BINSTRING", "BININT1", "NEWFALSE", "GLOBAL"} <= names
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES",
                        "STACK_GLOBAL", "FRAME"}  # nothing Python 3 would write
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert [arg for name, arg in ops if name == "BINSTRING"] == [
        tiny["test"].images.transpose(0, 3, 1, 2).reshape(20, -1).tobytes().decode("latin1")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core's name, in numpy 2
        batch = pickle.loads(raw, encoding="latin1")
    assert list(batch) == ["batch_label", "labels", "data", "filenames"]
    assert batch["batch_label"] == "testing batch 1 of 1"
    np.testing.assert_array_equal(batch["data"].reshape(20, 3, 32, 32).transpose(0, 2, 3, 1),
                                  tiny["test"].images)
    assert batch["labels"] == tiny["test"].labels.tolist()
    split = parse_batch(raw, "test_batch")  # and ours reads what numpy reads
    np.testing.assert_array_equal(split.images, tiny["test"].images)


def test_a_10000_image_batch_in_the_official_layout(tiny):
    """A full-size batch: LONG_BINPUT past 255 memo entries, lists in APPENDS of 1,000."""
    from conftest import make_split
    split = make_split(1000, 3)
    raw = batch_bytes(split, 0, 10_000, "py2")
    names = {op.name for op, _, _ in pickletools.genops(raw)}
    assert {"LONG_BINPUT", "APPENDS"} <= names
    assert [op.name for op, _, _ in pickletools.genops(raw)].count("APPENDS") == 20  # 2 lists
    got = parse_batch(raw, "data_batch_1")
    np.testing.assert_array_equal(got.images, split.images)
    np.testing.assert_array_equal(got.labels, split.labels)


@pytest.mark.parametrize("what", ["archive", "folder"])
def test_prepare_data_reads_the_official_layout(what, official, tiny, tmp_path):
    r = run_script("scripts/prepare_data.py", "--data.source", official[what],
                   "--data.dir", tmp_path / "d", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "train 30, test 20 images" in r.stdout
    _assert_betons_hold(tmp_path / "d", tiny)


def test_the_download_path_reads_the_official_layout(official, tiny, tmp_path):
    server = LocalFiles({"cifar-10-python.tar.gz": official["archive"].read_bytes()})
    url = f"{server.base}/cifar-10-python.tar.gz"
    md5 = hashlib.md5(official["archive"].read_bytes()).hexdigest()
    try:
        bad = _prepare_downloading(url, "0" * 32, tmp_path / "d")
        assert bad.returncode == 2 and bad.stderr.splitlines() == [
            f"error: {url}: downloaded archive failed its MD5 check ({'0' * 32}); "
            "try again"]
        assert not (tmp_path / "d").exists()  # nothing left behind
        r = _prepare_downloading(url, md5, tmp_path / "d")
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert f"downloading {url}" in r.stdout and "train 30, test 20 images" in r.stdout
    assert (tmp_path / "d" / "cifar-10-python.tar.gz").read_bytes() == \
        official["archive"].read_bytes()
    _assert_betons_hold(tmp_path / "d", tiny)
    offline = _prepare_downloading(url, md5, tmp_path / "d2")  # the server is gone
    assert offline.returncode == 2 and len(offline.stderr.splitlines()) == 1
    assert offline.stderr.startswith(f"error: could not download {url} (")
    assert "pass --data.source PATH" in offline.stderr and not (tmp_path / "d2").exists()
