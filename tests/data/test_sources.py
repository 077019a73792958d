"""Every kind of source round-trips pixels and labels; missing, truncated and corrupt archives
are one line."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import CPU

from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.data.convert import prepare
from ffcv_resnet.data.loaders import load_all
from ffcv_resnet.data.sources import detect
from ffcv_resnet.errors import DataError


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
