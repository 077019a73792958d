"""The pickled batches: a strict unpickler that refuses what is not CIFAR-10 before reading it."""
from __future__ import annotations

import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import py2pickle
from conftest import batch_bytes, dumps, LAYOUTS, QUIET, write_batches

from ffcv_resnet.data.convert import prepare
from ffcv_resnet.errors import DataError


class _Reduce:
    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _reconstruct_fn():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


U1 = np.dtype("u1")


EVIL_DATA = {
    "zero-stride view": _Reduce(np.ndarray, ((350_000, 3072), U1, b"x", 0, (0, 0))),
    "uninitialised": _Reduce(np.ndarray, ((10, 3072), U1)),
    "oversized claim": _Reduce(_reconstruct_fn(), (np.ndarray, (0,), b"b"),
                               (1, (350_000, 3072), U1, False, b"x" * 64)),
    "size mismatch": _Reduce(_reconstruct_fn(), (np.ndarray, (0,), b"b"),
                             (1, (10, 3072), U1, False, b"x" * 64)),
    "object array": _Reduce(_reconstruct_fn(), (np.ndarray, (0,), b"b"),
                            (1, (2,), np.dtype("O"), False, [1, 2])),
}


def _py2(node: _Reduce):
    """The same hostile reduce in the official (Python 2) layout: numpy under its py2 names."""
    func, args, *state = node.reduce
    name = {np.ndarray: ("numpy", "ndarray")}.get(func, ("numpy.core.multiarray", "_reconstruct"))
    def node(x):
        return (py2pickle.NDARRAY if x is np.ndarray else
                py2pickle.dtype_node(x) if isinstance(x, np.dtype) else x)

    args = tuple(node(a) for a in args)
    state = [tuple(node(x) for x in s) for s in state]
    return py2pickle.Reduce(py2pickle.Global(*name), args, *state)


# A py2 str that claims 2 GB of raw data in a 300-byte file.
EVIL_PY2 = {"string claiming 2 GB": py2pickle.Reduce(
    py2pickle.RECONSTRUCT, (py2pickle.NDARRAY, (0,), b"b"),
    (1, (10, 3072), py2pickle.dtype_node(U1), False, b"x" * 300))}


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


@pytest.mark.parametrize("name,layout", [(n, lay) for n in EVIL_DATA for lay in LAYOUTS]
                         + [(n, "py2") for n in EVIL_PY2])  # a py2 str: the official layout
def test_inflated_or_uninitialised_arrays_are_refused_with_bounded_memory(name, layout, tmp_path,
                                                                          tiny):
    folder = write_batches(tmp_path / "b", tiny, layout)
    if name in EVIL_PY2:
        raw = dumps({"data": EVIL_PY2[name], "labels": [0] * 10}, layout)
        at = raw.index(b"T" + (300).to_bytes(4, "little"))  # BINSTRING's length: now 2 GB
        raw = raw[:at + 1] + (2**31 - 1).to_bytes(4, "little") + raw[at + 5:]
    else:
        data = EVIL_DATA[name] if layout == "py3" else _py2(EVIL_DATA[name])
        raw = dumps({"data": data, "labels": [0] * 10}, layout)
    assert len(raw) < 1000
    (folder / "test_batch").write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="test_batch: not a CIFAR-10 batch"):
            prepare(tmp_path / "d", str(folder), **QUIET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # the tiny train batches, not 1 GB of claimed pixels
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("labels,message", [
    ([3.9] * 20, "label 3.9 is not an int"),
    (["3"] * 20, "label '3' is not an int"),
    ([True] * 20, "label True is not an int"),
    ([1] * 19, "'labels' is not a list of one label per image"),
    ((1,) * 20, "'labels' is not a list"),
])
def test_labels_must_be_ints_in_range_one_per_image(labels, message, tmp_path, tiny, layout):
    folder = write_batches(tmp_path / "b", tiny, layout)
    good = pickle.loads((folder / "test_batch").read_bytes(), encoding="latin1")
    good["labels"] = labels
    (folder / "test_batch").write_bytes(dumps(good, layout))
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "d", str(folder), **QUIET)


def test_an_oversized_batch_file_is_refused_before_it_is_read(tmp_path, tiny, layout,
                                                              monkeypatch):
    folder = write_batches(tmp_path / "b", tiny, layout)
    big = folder / "test_batch"
    with open(big, "r+b") as f:
        f.truncate(41 << 20)  # sparse: claims 41 MB
    real = Path.read_bytes

    def read_bytes(path):  # reading it at all is the failure: the size check must come first
        if path == big:
            raise AssertionError(f"{path} was read before its size was checked")
        return real(path)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(DataError, match=f"{big}: {41 << 20} bytes, more than a CIFAR-10 batch"):
        prepare(tmp_path / "d", str(folder), **QUIET)


def test_real_batches_still_round_trip_through_the_strict_unpickler(tiny, layout):
    from ffcv_resnet.data.pickled import parse_batch
    split = parse_batch(batch_bytes(tiny["test"], 0, 20, layout), "t")
    np.testing.assert_array_equal(split.images, tiny["test"].images)
    assert type(split.images) is np.ndarray and split.images.flags.owndata
