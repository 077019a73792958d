"""Sources -> betons -> loaders: exact round trips, order, reruns, and every kind of bad input."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import py2pickle
from conftest import ROOT, dumps, tar_folder, write_batches, write_image_folder
from ffcv_resnet.data.betons import beton_path, check_beton
from ffcv_resnet.data.convert import prepare
from ffcv_resnet.errors import DataError
from ffcv_resnet.data.loaders import ResidentBatches, FfcvBatches, Stream, load_all
from ffcv_resnet.data.sources import detect

CPU = torch.device("cpu")
KINDS = ["batches-folder", "python-archive", "image-folder", "image-tar",
         "batches-folder-py2", "python-archive-py2"]  # -py2: the official files' byte layout


@pytest.mark.parametrize("name", KINDS)
def test_every_source_round_trips_pixels_and_labels(name, sources, tiny, tmp_path):
    kind = name.removesuffix("-py2")
    assert detect(sources[name]) == kind
    meta = prepare(tmp_path / "d", str(sources[name]), log=lambda *_: None)
    assert meta["counts"] == {"train": 30, "test": 20} and meta["source"]["kind"] == kind
    for split in ("train", "test"):
        images, labels = load_all(beton_path(tmp_path / "d", split), CPU, batch_size=7)
        assert images.dtype == torch.uint8 and images.shape == (len(tiny[split].labels), 3, 32, 32)
        assert images.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), tiny[split].images)
        np.testing.assert_array_equal(labels.numpy(), tiny[split].labels)


def test_indices_load_the_chosen_images_in_the_given_order(sources, tiny, tmp_path):
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    chosen = [17, 3, 4, 19]
    images, labels = load_all(beton_path(tmp_path / "d", "test"), CPU, indices=chosen,
                              batch_size=3)
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), tiny["test"].images[chosen])
    np.testing.assert_array_equal(labels.numpy(), tiny["test"].labels[chosen])
    with pytest.raises(DataError, match="indices"):
        load_all(beton_path(tmp_path / "d", "test"), CPU, indices=[0, 20])


def test_rerun_does_nothing_and_force_rebuilds(sources, tmp_path, monkeypatch):
    d, src = tmp_path / "d", str(sources["python-archive"])
    prepare(d, src, log=lambda *_: None)
    stamp = os.stat(beton_path(d, "train")).st_mtime_ns
    said = []
    prepare(d, src, log=said.append)
    assert os.stat(beton_path(d, "train")).st_mtime_ns == stamp and "up to date" in said[0]
    prepare(d, "", log=said.append)  # no source named: reuse whatever complete betons are there
    assert os.stat(beton_path(d, "train")).st_mtime_ns == stamp
    prepare(d, src, force=True, log=lambda *_: None)
    assert os.stat(beton_path(d, "train")).st_mtime_ns != stamp
    # force with no source: rebuilt from the recorded one, never a download (offline here)
    stamp, said = os.stat(beton_path(d, "train")).st_mtime_ns, []
    import ffcv_resnet.data.convert as convert
    monkeypatch.setattr(convert, "download", lambda *_: pytest.fail(
        "--data.force downloaded instead of rebuilding"))
    prepare(d, "", force=True, log=said.append)
    assert os.stat(beton_path(d, "train")).st_mtime_ns != stamp
    assert f"rebuilding from {src} (--data.force)" in said
    meta = json.loads((d / "cifar10.json").read_text())
    meta["source"]["path"] = str(tmp_path / "gone.tar.gz")
    (d / "cifar10.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="--data.force: the betons' source .*gone.tar.gz is gone"):
        prepare(d, "", force=True, log=said.append)


def test_changed_or_damaged_betons_are_rebuilt(sources, tmp_path):
    d = tmp_path / "d"
    prepare(d, str(sources["image-folder"]), log=lambda *_: None)
    path = beton_path(d, "test")
    path.write_bytes(path.read_bytes()[:-100])
    prepare(d, str(sources["image-folder"]), log=lambda *_: None)
    assert check_beton(path) == 20
    prepare(d, str(sources["batches-folder"]), log=lambda *_: None)  # another source
    assert (d / "cifar10.json").read_text().count("batches-folder") == 1


def test_ffcv_training_batches_shuffle_reproducibly_and_drop_last(sources, tiny, tmp_path):
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    path = beton_path(tmp_path / "d", "train")
    index = {bytes(img): i for i, img in enumerate(tiny["train"].images)}  # image -> its place

    def epoch_order(seed):
        batches = FfcvBatches(path, 8, CPU, Stream(order="random", seed=seed))
        assert len(batches) == 30 // 8
        out = [(x.shape, [index[bytes(img.permute(1, 2, 0).contiguous().numpy())] for img in x],
                i.tolist()) for x, _, i in batches]
        assert all(shape == (8, 3, 32, 32) for shape, _, _ in out)
        assert all(found == carried for _, found, carried in out)  # each image's beton index
        return [i for _, order, _ in out for i in order]

    first = epoch_order(0)
    assert len(first) == 24 and len(set(first)) == 24  # drop_last: 3 full batches, no repeats
    assert first == epoch_order(0)  # the same seed, the same order
    assert first != epoch_order(1)  # another seed, another order
    assert first != sorted(first) and first != list(range(24))  # shuffled, not file order


def test_copies_to_the_device_block_until_done(sources, tmp_path):
    """FFCV reuses a pinned host slot without waiting for its asynchronous copy (see
    ffcv_loader): every ToDevice of our pipelines must copy blocking."""
    from ffcv.transforms import ToDevice
    from ffcv_resnet.data.loaders import ffcv_loader
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    loader = ffcv_loader(beton_path(tmp_path / "d", "train"), 8, CPU)
    ops = [op for ops in loader._args["pipelines"].values() for op in ops
           if isinstance(op, ToDevice)]
    assert len(ops) == 2 and not any(op.non_blocking for op in ops)


def test_ffcv_imports_without_distutils():
    """Python 3.12 has no distutils and the GPU machine's bare interpreter may lack setuptools:
    with both hidden, ffcv's loader and writer still import through data/ffcv_shim.py."""
    code = ("import sys; sys.modules.update({'distutils': None, 'distutils.log': None, "
            "'setuptools': None})\n"
            "from ffcv_resnet.data.ffcv_shim import distutils_for_ffcv\n"
            "assert distutils_for_ffcv() == 'ffcv_resnet_stand_in'\n"
            "import ffcv.loader, ffcv.writer\n"
            "from distutils.log import warn; print('ok')")
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert bare.stdout.strip() == "ok", bare.stderr[-2000:]
    blocked = subprocess.run([sys.executable, "-c", code.split("\n")[0] + "\nimport ffcv.loader"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert blocked.returncode != 0 and "distutils" in blocked.stderr  # what the shim prevents


def test_resident_batches_cover_distinct_images_each_epoch(sources, tiny, tmp_path):
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    batches = ResidentBatches(beton_path(tmp_path / "d", "train"), 8, CPU, Stream(seed=1))
    seen = []
    for x, y, i in batches:
        assert x.dtype == torch.uint8 and x.is_contiguous(memory_format=torch.channels_last)
        seen += [(bytes(img.permute(1, 2, 0).contiguous().numpy()), int(lbl))
                 for img, lbl in zip(x, y)]
        # each image's carried beton index is where it sits in the source
        assert [bytes(tiny["train"].images[k]) for k in i.tolist()] == [s for s, _ in seen[-8:]]
    assert len(batches) == 3 and len(set(seen)) == 24
    order = [bytes(img) for img in tiny["train"].images]
    source = {(bytes(img), int(lbl)) for img, lbl in zip(tiny["train"].images,
                                                          tiny["train"].labels)}
    assert set(seen) <= source
    places = [order.index(img) for img, _ in seen]
    assert places != sorted(places)  # shuffled, not the file's order
    again = [bytes(img.permute(1, 2, 0).contiguous().numpy()) for x, *_ in batches for img in x]
    assert again != [img for img, _ in seen]  # the next epoch draws another order


def test_header_layout_mirrors_ffcv():
    from ffcv import types
    from ffcv_resnet.data import betons
    assert betons.HeaderType == types.HeaderType
    assert betons.ALLOC_TABLE_TYPE == types.ALLOC_TABLE_TYPE
    assert betons.CURRENT_VERSION == types.CURRENT_VERSION


# --- bad input: one-line DataError naming the problem, and nothing left behind ----------------

def _image_folder_with(tmp_path, tiny, mutate):
    root = write_image_folder(tmp_path / "imgs", tiny)
    mutate(root)
    return root


@pytest.mark.parametrize("mutate,message", [
    (lambda r: Image.new("RGB", (31, 32)).save(r / "train/cat/0009.png"), "31x32 RGB"),
    (lambda r: Image.new("RGBA", (32, 32)).save(r / "test/dog/0011.png"), "32x32 RGBA"),
    (lambda r: (r / "train/cat/0009.png").write_bytes(b"not an image"), "unreadable image"),
    (lambda r: (r / "train/cat").rename(r / "train/kitten"), "unknown class folder 'train/kitten'"),
    (lambda r: [p.unlink() for p in (r / "test/ship").iterdir()], "missing class folder"),
    (lambda r: [p.unlink() for p in (r / "test").rglob("*.png")], "empty split"),
])
def test_bad_image_folder(tmp_path, tiny, mutate, message):
    root = _image_folder_with(tmp_path, tiny, mutate)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "d", str(root), log=lambda *_: None)
    assert not (tmp_path / "d").exists()


def test_missing_truncated_and_corrupt_archives(tmp_path, sources):
    with pytest.raises(DataError, match="no such file"):
        prepare(tmp_path / "d", str(tmp_path / "nope.tar.gz"))
    raw = sources["python-archive"].read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt archive"):
        prepare(tmp_path / "d", str(cut), log=lambda *_: None)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(DataError, match="not a .tar"):
        prepare(tmp_path / "d", str(junk))
    assert not (tmp_path / "d").exists()


def test_label_out_of_range_and_malicious_pickles_are_refused(tmp_path, tiny, layout):
    folder = write_batches(tmp_path / "b", tiny, layout)
    bad = pickle.loads((folder / "test_batch").read_bytes(), encoding="latin1")
    bad["labels"][3] = 10
    (folder / "test_batch").write_bytes(dumps(bad, layout))
    with pytest.raises(DataError, match="label 10 out of range"):
        prepare(tmp_path / "d", str(folder), log=lambda *_: None)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = (Evil() if layout == "py3" else  # Python 2 named os.system posix.system
            py2pickle.Reduce(py2pickle.Global("posix", "system"), Evil().__reduce__()[1]))
    (folder / "test_batch").write_bytes(dumps({"data": evil, "labels": []}, layout))
    with pytest.raises(DataError, match="refusing to load"):
        prepare(tmp_path / "d", str(folder), log=lambda *_: None)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "d").exists()


def test_truncated_or_foreign_beton_is_refused_on_load(sources, tmp_path):
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    path = beton_path(tmp_path / "d", "train")
    raw = path.read_bytes()
    for cut in (len(raw) - 24, len(raw) - 5, len(raw) // 2, 10):
        path.write_bytes(raw[:cut])
        with pytest.raises(DataError, match="truncated|not a beton"):
            load_all(path, CPU)
    path.write_bytes(os.urandom(len(raw)))
    with pytest.raises(DataError, match="not a beton|truncated"):
        FfcvBatches(path, 8, CPU)
    with pytest.raises(DataError, match="no such beton"):
        check_beton(tmp_path / "nowhere.beton")


def test_tar_with_extra_files_and_prefix_is_read(tmp_path, tiny):
    root = write_image_folder(tmp_path / "imgs", tiny, fmt="bmp")
    (root / "README.md").write_text("hello")
    archive = tar_folder(root, tmp_path / "x.tar", "deep/prefix")
    meta = prepare(tmp_path / "d", str(archive), log=lambda *_: None)
    assert meta["counts"] == {"train": 30, "test": 20}


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_prepare_cli_reports_bad_input_in_one_line(tmp_path, sources):
    ok = _run("scripts/prepare_data.py", "--data.source", str(sources["image-tar"]),
              "--data.dir", str(tmp_path / "d"))
    assert ok.returncode == 0 and "train 30, test 20" in ok.stdout
    again = _run("scripts/prepare_data.py", "--data.source", str(sources["image-tar"]),
                 "--data.dir", str(tmp_path / "d"))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    for args, message in [(["--data.source", str(tmp_path / "missing")], "no such file"),
                          (["--data.force", "False "], None),
                          (["--data.force", "maybe"], "bad value 'maybe' for --data.force"),
                          (["--data.nope", "1"], "unrecognized arguments")]:
        r = _run("scripts/prepare_data.py", "--data.dir", str(tmp_path / "d"), *args)
        if message is None:
            assert r.returncode == 0
            continue
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no traceback


def test_up_to_date_check_stays_light():
    # a rerun of prepare_data.py must return at once: its modules must not pull in torch or ffcv
    r = _run("-c", "import sys; sys.path.insert(0, '.'); import ffcv_resnet.data.convert, "
                   "ffcv_resnet.config; print('torch' in sys.modules, 'ffcv' in sys.modules)")
    assert r.returncode == 0 and r.stdout.split() == ["False", "False"], r.stderr


@pytest.mark.parametrize("kind", ["ffcv", "resident"])
def test_batches_name_each_image_by_its_beton_index_in_subsets_and_shards(kind, sources, tiny,
                                                                          tmp_path):
    """What alternating flips and per-image records key on: every image a batch carries is the
    source's image at the index it carries, with a subset and in each of two shards."""
    from ffcv_resnet.data.loaders import Shard, train_batches
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    subset = [1, 2, 4, 5, 7, 9, 11, 12, 13, 17, 20, 21, 22, 25, 26, 29]
    seen = []
    for rank in (0, 1):
        if kind == "ffcv":  # FFCV shards inside a process group only: stand in with its sampler
            batches = FfcvBatches(beton_path(tmp_path / "d", "train"), 4, CPU,
                                  Stream(order="random", seed=3, indices=subset))
            if rank:
                continue
        else:
            batches = train_batches(kind, beton_path(tmp_path / "d", "train"), 4, CPU,
                                    Stream(order="random", seed=3, indices=subset,
                                           shard=Shard(rank, 2)))
        for x, y, i in batches:
            pixels = x.permute(0, 2, 3, 1).numpy()
            np.testing.assert_array_equal(pixels, tiny["train"].images[i.numpy()])
            np.testing.assert_array_equal(y.numpy(), tiny["train"].labels[i.numpy()])
            seen += i.tolist()
    assert len(seen) == len(set(seen)) == 16 and set(seen) == set(subset)


def test_an_ffcv_pass_left_early_stops_its_thread_and_keeps_the_thread_count(sources, tmp_path):
    import threading
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    batches = FfcvBatches(beton_path(tmp_path / "d", "train"), 4, CPU, Stream(workers=1))
    before, threads = set(threading.enumerate()), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        epoch = iter(batches)
        next(epoch)
        assert torch.get_num_threads() == 2  # FFCV's __iter__ set it to its 1 worker
        started = set(threading.enumerate()) - before
        assert any(t.daemon for t in started)  # FFCV's epoch thread
        epoch.close()
        assert not any(t.is_alive() for t in started)
    finally:
        torch.set_num_threads(threads)
