"""Data integrity: checksummed betons, bounded unpickling, strict image folders, clean interrupts,
and a data-reading chain without import circles."""
from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import py2pickle
from conftest import (LAYOUTS, ROOT, batch_bytes, dumps, make_split, run_script, write_batches,
                      write_image_folder)
from ffcv_resnet.data.betons import beton_path, checked_metadata
from ffcv_resnet.data.convert import prepare
from ffcv_resnet.data.cifar import BATCHES
from ffcv_resnet.errors import DataError
from ffcv_resnet.data.loaders import FfcvBatches, load_all

CPU = torch.device("cpu")
QUIET = {"log": lambda *_: None}


def _damage(path, offset, n=4096):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + n] = os.urandom(min(n, len(raw) - offset))
    path.write_bytes(bytes(raw))


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


# --- pickles: what a 300-byte file can claim is refused before anything large is allocated ---

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


# --- strict image folders ---

def test_nested_and_misplaced_images_are_errors_litter_is_counted(tmp_path, tiny):
    root = write_image_folder(tmp_path / "imgs", tiny)
    (root / "train/cat/.DS_Store").write_bytes(b"\0")
    (root / "train/__MACOSX").mkdir()
    (root / "train/__MACOSX/._0001.png").write_bytes(b"\0")
    (root / "README.md").write_text("outside the splits: skipped, and counted")
    (root / "extras").mkdir()
    (root / "extras/notes.txt").write_text("so is this")
    said = []
    meta = prepare(tmp_path / "d", str(root), log=said.append)
    assert meta["counts"] == {"train": 30, "test": 20}
    assert any("skipped 4 files" in s for s in said), said
    nested = root / "train/cat/more"
    nested.mkdir()
    Image.fromarray(tiny["train"].images[0]).save(nested / "x.png")
    with pytest.raises(DataError, match="'train/cat/more/x.png' is not at split/class/file"):
        prepare(tmp_path / "d2", str(root), **QUIET)
    nested.joinpath("x.png").unlink()
    (root / "test/notes.txt").write_text("misplaced")
    with pytest.raises(DataError, match="'test/notes.txt' is not at split/class/file"):
        prepare(tmp_path / "d2", str(root), **QUIET)


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def _png(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _members(tiny, root):
    from ffcv_resnet.data.cifar import CLASSES
    return [(f"{root}/{s}/{CLASSES[label]}/{i}.png", _png(img)) for s in ("train", "test")
            for i, (img, label) in enumerate(zip(tiny[s].images, tiny[s].labels))]


def test_two_roots_and_duplicate_members_in_a_tar_are_errors(tmp_path, tiny):
    two = _tar(tmp_path / "two.tar", _members(tiny, "a") + _members(tiny, "b"))
    with pytest.raises(DataError, match="two dataset roots, 'a' and 'b'"):
        prepare(tmp_path / "d", str(two), **QUIET)
    members = _members(tiny, "root")
    dup = _tar(tmp_path / "dup.tar", members + members[:1])
    with pytest.raises(DataError, match="'train/airplane/0.png' appears twice"):
        prepare(tmp_path / "d", str(dup), **QUIET)
    big = _tar(tmp_path / "big.tar", members + [("root/train/cat/huge.png", b"\0" * (2 << 20))])
    with pytest.raises(DataError, match="huge.png: 2097152 bytes, more than any CIFAR-10 file"):
        prepare(tmp_path / "d", str(big), **QUIET)
    assert not (tmp_path / "d").exists()


# --- interrupts while writing, and what a killed writer leaves ---

@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    """A batches folder large enough that writing it takes a few seconds with one worker."""
    folder = tmp_path_factory.mktemp("big") / "cifar-10-batches-py"
    folder.mkdir()
    for name in BATCHES["train"]:
        (folder / name).write_bytes(batch_bytes(make_split(800, hash(name) % 1000), 0, 8000))
    (folder / "test_batch").write_bytes(batch_bytes(make_split(100, 7), 0, 1000))
    return folder


def _descendants(pid):
    r = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return r.stdout.split()


def _running(pid):
    """Alive and not a zombie (a container's init may never reap an orphan)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_writing_stops_every_worker_and_leaves_no_temporary(sig, code, big_source,
                                                                         tmp_path):
    d = tmp_path / "d"
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    p = subprocess.Popen([sys.executable, "scripts/prepare_data.py", "--data.source",
                          str(big_source), "--data.dir", str(d), "--data.workers", "1"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(d.glob(".*.tmp")) if d.exists() else True:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    workers = _descendants(p.pid)
    # Ctrl-C in a terminal reaches the whole process group; kill/timeout send SIGTERM to one
    sent = time.monotonic()
    os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)
    out, err = p.communicate(timeout=60)  # generous: CI machines are shared
    stopped = time.monotonic() - sent
    assert p.returncode == code, err[-2000:]
    assert stopped < 15, f"took {stopped:.1f} s to stop (about 1.5 s on an idle 2-core machine)"
    said = "interrupted (SIGTERM)" if sig == signal.SIGTERM else "interrupted (Ctrl-C)"
    assert any(line.endswith(said) for line in err.splitlines())  # FFCV's bar may close after
    assert "Traceback" not in err and "Exception ignored" not in err
    time.sleep(0.5)
    assert [w for w in workers if _running(w)] == []
    assert list(d.glob(".*")) == [] and not (d / "cifar10.json").exists()
    if os.path.isdir("/dev/shm"):  # the writer's shared memory is freed, none left behind
        assert set(os.listdir("/dev/shm")) - shm == set()


def test_a_killed_writers_temporary_is_removed_by_the_next_run(sources, tmp_path):
    d = tmp_path / "d"
    prepare(d, str(sources["batches-folder"]), **QUIET)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = d / f".train.beton.{dead.pid}.tmp"
    live = d / f".train.beton.{os.getpid()}.tmp"
    stale.write_bytes(b"half a beton")
    live.write_bytes(b"someone else's write in progress")
    said = []
    prepare(d, str(sources["batches-folder"]), log=said.append)
    assert not stale.exists() and live.exists() and any("left by a killed run" in s for s in said)


def test_sigterm_stops_training_like_ctrl_c(learnable_data, tmp_path):
    from conftest import TRAIN_ARGS
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--data.dir", str(learnable_data),
                          "--run.dir", str(tmp_path / "r"), *TRAIN_ARGS], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "r" / "last.pt").exists():
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and err.strip().splitlines()[-1] == "interrupted (SIGTERM)"
    assert (tmp_path / "r" / "last.pt").exists() and not (tmp_path / "r" / "metrics.json").exists()


# --- structure ---

def test_odd_keys_links_and_unusable_data_folders_are_one_line_errors(tmp_path, tiny, sources):
    folder = write_batches(tmp_path / "b", tiny)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    batch[b"\xff"] = 1
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="a key that is not text"):
        prepare(tmp_path / "d", str(folder), **QUIET)
    (tmp_path / "file").write_text("x")
    for data_dir in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(DataError, match="not a folder"):
            prepare(data_dir, str(sources["image-folder"]), **QUIET)
    members = _members(tiny, "root")
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        link = tarfile.TarInfo("root/train/cat/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="a link or special file"):
        prepare(tmp_path / "d", str(tmp_path / "link.tar"), **QUIET)
    root = write_image_folder(tmp_path / "imgs", tiny)
    (root / "train/cat/extra.png").symlink_to(root / "train/cat/0009.png")
    with pytest.raises(DataError, match="a symbolic link"):
        prepare(tmp_path / "d", str(root), **QUIET)
    (root / "train/cat/extra.png").unlink()
    os.mkfifo(root / "fifo")  # a special file, even outside the splits: refused, not skipped
    with pytest.raises(DataError, match="fifo: a special file"):
        prepare(tmp_path / "d", str(root), **QUIET)


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
