"""Writing betons: reruns, rebuilds, interrupted writers and odd data folders."""
from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import (batch_bytes, make_split, QUIET, ROOT, tar_members, write_batches,
                      write_image_folder)

from ffcv_resnet.data.betons import beton_path, check_beton
from ffcv_resnet.data.cifar import BATCHES
from ffcv_resnet.data.convert import prepare
from ffcv_resnet.errors import DataError


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
    members = tar_members(tiny, "root")
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
