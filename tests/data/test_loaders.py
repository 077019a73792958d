"""Loaders: subsets in order, shuffles by seed, blocking device copies, resident and sharded
batches, each batch's beton indices, and an FFCV pass left early."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import CPU
from dist_probe import image_hashes

from ffcv_resnet.data.betons import beton_path, check_beton
from ffcv_resnet.data.convert import prepare
from ffcv_resnet.data.loaders import FfcvBatches, load_all, ResidentBatches, Shard, Stream
from ffcv_resnet.errors import DataError


def test_indices_load_the_chosen_images_in_the_given_order(sources, tiny, tmp_path):
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    chosen = [17, 3, 4, 19]
    images, labels = load_all(beton_path(tmp_path / "d", "test"), CPU, indices=chosen,
                              batch_size=3)
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), tiny["test"].images[chosen])
    np.testing.assert_array_equal(labels.numpy(), tiny["test"].labels[chosen])
    with pytest.raises(DataError, match="indices"):
        load_all(beton_path(tmp_path / "d", "test"), CPU, indices=[0, 20])


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


def test_ffcv_is_imported_only_when_a_loader_needs_it_and_keeps_the_thread_count():
    """Every command that reads runs imports this module; importing ffcv costs seconds of
    numba compiling (a bad folder would wait for it) and sets torch to one thread."""
    import subprocess
    import sys
    from conftest import ROOT
    code = ("import sys, torch; torch.set_num_threads(2)\n"
            "import ffcv_resnet.data.loaders as L, ffcv_resnet.finished.run, "
            "ffcv_resnet.explain.explain, ffcv_resnet.training.engine, "
            "ffcv_resnet.compare.compare, ffcv_resnet.predict.run\n"
            "print('ffcv' in sys.modules, flush=True)\n"
            "f = L.ffcv_api()\n"
            "print('ffcv' in sys.modules, torch.get_num_threads(), f is L.ffcv_api())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.stdout.split()[:1] == ["False"], r.stderr[-2000:]  # nothing imported ffcv yet
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True", "2", "True"]


def test_resident_shards_are_disjoint_and_cover_the_split(learnable_data):
    path = beton_path(learnable_data, "train")
    shards = [ResidentBatches(path, 8, torch.device("cpu"), Stream(seed=3, shard=Shard(r, 3)))
              for r in range(3)]
    assert [len(s) for s in shards] == [6, 6, 6]  # 160 // 3 = 53 each, 6 batches of 8
    seen = [np.concatenate([image_hashes(b.images) for b in s]) for s in shards]
    assert len(set().union(*map(set, seen))) == sum(map(len, seen)) == 3 * 48
