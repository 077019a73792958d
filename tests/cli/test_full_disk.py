"""A full disk and a read-only one, for real: small tmpfs mounts (skipped, saying why, where this
machine cannot mount one). A full disk is one line naming the file and what can be resumed;
nothing half-written or half-drawn is left."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

import pytest

from conftest import make_split, run_script, TRAIN_ARGS, write_batches


pytestmark = pytest.mark.slow  # every test here starts a process


@contextlib.contextmanager
def mounted(path, size: str, read_only: bool = False):
    """A tmpfs of `size` at `path` for the block (pytest.skip when it cannot be mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_disk_while_writing_last_pt_is_one_line(learnable_data, tmp_path):
    with mounted(tmp_path / "fs", "3m") as fs:
        run = fs / "r"
        r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run,
                       *TRAIN_ARGS, timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        assert r.stderr.splitlines() == [
            f"error: no space left on the device of {run} while writing last.pt; no last.pt "
            "was written: nothing to resume"]
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml",
                                                          "history.jsonl"]


def test_a_full_disk_while_explaining_leaves_no_outputs(trained_run, learnable_data, tmp_path):
    files = [p for p in trained_run.iterdir() if p.is_file() and p.name in (
        "config.yaml", "history.jsonl", "model.pt", "errors.json", "curves.png",
        "metrics.json")]
    need = sum(p.stat().st_size for p in files)
    with mounted(tmp_path / "fs", f"{need // 1024 + 200}k") as fs:
        run = fs / "r"
        run.mkdir()
        for p in files:
            shutil.copy(p, run / p.name)
        errors = json.loads((run / "errors.json").read_text())
        for row in errors["errors"]:  # as training wrote it
            row.pop("scores", None)
        (run / "errors.json").write_text(json.dumps(errors))
        r = run_script("scripts/explain.py", "--run.dir", run, "--data.dir", learnable_data,
                       "--explain.scored", "2", "--explain.screenshot", "off", timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no space left on the device of ")
        left = sorted(p.name for p in run.iterdir())
        assert left == sorted([".lock", *(p.name for p in files)])  # no output of the pass
        assert all("scores" not in e for e in json.loads((run / "errors.json").read_text())[
            "errors"])


def test_a_read_only_results_folder_is_refused_before_any_work(learnable_data, tmp_path):
    from ffcv_resnet.errors import UserError
    from ffcv_resnet.reproduce.options import ReproduceConfig
    from ffcv_resnet.reproduce.stages import reproduce
    with mounted(tmp_path / "ro", "1m", read_only=True) as ro:
        rc = ReproduceConfig(smoke=True, out=str(tmp_path / "o"), results=str(ro / "results"))
        with pytest.raises(UserError, match="--reproduce.results .*: cannot be written"):
            reproduce(rc, learnable_data, "")
        assert not (tmp_path / "o").exists()


def test_a_full_disk_while_writing_betons_is_one_line_and_leaves_no_temporary(tmp_path):
    """FFCV's writer processes die of ENOSPC and its parent would wait for them forever: the
    dead writer is found, its temporary removed, and one line names the folder and the space
    the betons need (the writers' own tracebacks go to a log, not the terminal)."""
    src = write_batches(tmp_path / "src" / "cifar-10-batches-py",
                        {"train": make_split(300, 0), "test": make_split(30, 1)})  # ~10 MB
    with mounted(tmp_path / "fs", "3m") as fs:
        r = run_script("scripts/prepare_data.py", "--data.dir", fs / "d", "--data.source", src,
                       timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = [x for x in r.stderr.strip().splitlines() if "it/s]" not in x]  # FFCV's bar
        assert len(lines) == 1 and lines[0].startswith(f"error: no space left on the device of "
                                                       f"{fs / 'd'} while writing train.beton")
        assert "the betons need about 10 MB" in lines[0] and "Traceback" not in r.stderr
        assert [p.name for p in (fs / "d").iterdir()] == []  # no temporary, no metadata
