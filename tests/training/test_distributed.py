"""Data-parallel training under torchrun (2 CPU processes, gloo) on the tiny learnable betons:
one run folder, equal weights in both processes, an evaluation equal to a single process's,
every training image once per epoch, alternating flips per image across the shards, a killed
process ends the other, resume across a kill, no recompile from the loader's threads."""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_script, TRAIN_ARGS
from dist_probe import image_hashes

from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.data.loaders import load_all
from ffcv_resnet.finished.checkpoint import load_checkpoint
from ffcv_resnet.finished.evaluate import find_errors, metrics, predict


pytestmark = pytest.mark.slow  # every test here starts a process


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(*args, env=None, timeout=600, probe=True) -> subprocess.CompletedProcess:
    script = ROOT / "tests" / "dist_probe.py" if probe else ROOT / "scripts" / "train.py"
    return subprocess.run([*TORCHRUN, str(script), *map(str, args)], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def ddp_runs(learnable_data, tmp_path_factory) -> dict[str, Path]:
    """One 2-process run per training data path, observed by dist_probe."""
    runs = {}
    for loader in ("ffcv", "resident"):
        root = tmp_path_factory.mktemp(f"ddp-{loader}")
        r = torchrun("--data.dir", learnable_data, "--run.dir", root / "run", *TRAIN_ARGS,
                     "--data.loader", loader, "--augment.flip", "alternate",
                     env={"PROBE_DIR": str(root)})
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("test accuracy") == 1 and "2 processes of cpu" in r.stdout
        runs[loader] = root
    return runs


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the training process of rank `rank` whose command line holds `marker`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in cmd and "dist_probe.py" in cmd and f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _until(ready, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether rank 0's rendezvous store accepts connections on `port`."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("loader", ["ffcv", "resident"])
def test_two_processes_train_one_run_with_equal_weights(ddp_runs, loader):
    root = ddp_runs[loader]
    assert sorted(p.name for p in root.iterdir()) == [
        "rank0-flips.json", "rank0-index.json", "rank0.json", "rank0.pt",
        "rank1-flips.json", "rank1-index.json", "rank1.json", "rank1.pt", "run"]
    m = read(root / "run" / "metrics.json")
    assert m["processes"] == 2 and m["epochs"] == 3 and m["train_images"] == 3 * 160
    a, b = torch.load(root / "rank0.pt"), torch.load(root / "rank1.pt")
    saved = torch.load(root / "run" / "model.pt", weights_only=True)["state_dict"]
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert len(params) > 40 and all(torch.equal(a[k], b[k]) for k in params)
    assert all(torch.equal(a[k], saved[k]) for k in a)  # model.pt is what rank 0 trained


@pytest.mark.parametrize("loader", ["ffcv", "resident"])
def test_the_dynamics_of_two_processes_cover_every_image_every_epoch(ddp_runs, learnable_data,
                                                                     loader):
    """Each process records its shard's images and the epochs are summed over both: every
    training image seen once an epoch, with its own label, and the sums of the epochs equal
    the sums of its shard's forgetting and right epochs (no image counted twice)."""
    _, labels = load_all(beton_path(learnable_data, "train"), torch.device("cpu"))
    d = np.load(ddp_runs[loader] / "run" / "train_dynamics.npz")
    assert d["seen_epochs"].tolist() == [3] * 160 and d["label"].tolist() == labels.tolist()
    assert np.isfinite(d["aum"]).all() and (d["right_epochs"] <= 3).all()
    assert (d["forgetting_events"] <= d["seen_epochs"] - 1).all() and int(d["epochs"]) == 3


@pytest.mark.parametrize("loader", ["ffcv", "resident"])
def test_every_training_image_once_per_epoch_across_processes(ddp_runs, learnable_data, loader):
    images, _ = load_all(beton_path(learnable_data, "train"), torch.device("cpu"))
    everything = collections.Counter(image_hashes(images))
    assert len(everything) == 160  # distinct images: a hash names one
    seen = [read(ddp_runs[loader] / f"rank{r}.json") for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3
    for epoch in range(3):
        assert len(seen[0][epoch]) == len(seen[1][epoch]) == 80  # an equal share each
        assert collections.Counter(seen[0][epoch] + seen[1][epoch]) == everything
    assert seen[0][0] != seen[0][1]  # a new order every epoch


@pytest.mark.parametrize("loader", ["ffcv", "resident"])
def test_alternating_flips_alternate_per_image_across_two_processes(ddp_runs, learnable_data,
                                                                    loader):
    """Each process flips its shard's images by beton index and epoch: over both processes
    every image is flipped at random in epoch 0 and then every other epoch, and the index a
    batch carries is the image's own."""
    images, _ = load_all(beton_path(learnable_data, "train"), torch.device("cpu"))
    hashes = image_hashes(images)
    flips: dict[int, list[bool]] = collections.defaultdict(list)
    for rank in (0, 1):
        seen = read(ddp_runs[loader] / f"rank{rank}.json")
        index = read(ddp_runs[loader] / f"rank{rank}-index.json")
        assert [[hashes[i] for i in epoch] for epoch in index] == seen
    by_epoch = [read(ddp_runs[loader] / f"rank{r}-flips.json") for r in (0, 1)]
    for epoch in ("0", "1", "2"):
        both = {**by_epoch[0][epoch], **by_epoch[1][epoch]}
        assert len(both) == 160  # each image once, in one of the processes
        for i, f in both.items():
            flips[int(i)].append(f)
    assert all(f == [f[0], not f[0], f[0]] for f in flips.values())
    assert 40 < sum(f[0] for f in flips.values()) < 120


@pytest.mark.parametrize("loader", ["ffcv", "resident"])
def test_evaluation_equals_a_single_process_evaluation_of_the_saved_weights(
        ddp_runs, learnable_data, loader):
    run = ddp_runs[loader] / "run"
    m, errors = read(run / "metrics.json"), read(run / "errors.json")["errors"]
    model, _ = load_checkpoint(run / "model.pt")
    images, labels = load_all(beton_path(learnable_data, "test"), torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1)
    try:
        logits = predict(model, images, batch_size=32, precision=m["precision"], tta="flip")
    finally:
        torch.set_num_threads(threads)
    assert metrics(logits, labels)["accuracy"] == m["test_accuracy"]
    ours = find_errors(logits, labels, torch.arange(len(labels)))
    assert [(e["index"], e["true"], e["predicted"]) for e in ours] == \
        [(e["index"], e["true"], e["predicted"]) for e in errors]
    assert [e["confidence"] for e in ours] == pytest.approx([e["confidence"] for e in errors],
                                                           abs=1e-5)


def test_killing_one_process_ends_the_other_and_the_run_resumes_exactly(
        ddp_runs, learnable_data, tmp_path):
    run = tmp_path / "run"
    # the recipe of ddp_runs["ffcv"] (alternate flip: each image's flips survive the kill)
    p = subprocess.Popen([*TORCHRUN, str(ROOT / "tests" / "dist_probe.py"), "--data.dir",
                          str(learnable_data), "--run.dir", str(run), *TRAIN_ARGS,
                          "--augment.flip", "alternate"],
                         cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PROBE_DIR": str(tmp_path)})
    _until(lambda: (run / "last.pt").exists() or p.poll() is not None, "epoch 1's last.pt")
    assert p.poll() is None, "the run ended before it could be killed"
    rank0, rank1 = _rank_pid(str(run), 0), _rank_pid(str(run), 1)
    os.kill(rank1, signal.SIGKILL)
    killed = time.monotonic()
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0 and time.monotonic() - killed < 60
    assert not _alive(rank0), "rank 0 outlived the run"
    assert "interrupted" in err or "another process of the run" in err
    assert not (run / "metrics.json").exists()
    done = len((run / "history.jsonl").read_text().splitlines())
    assert 1 <= done < 3
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run,
                   "--run.resume", "true", timeout=120)  # one process cannot go on with it
    assert r.returncode == 2 and "trained in 2 process(es), not 1" in r.stderr
    r = torchrun("--data.dir", learnable_data, "--run.dir", run, "--run.resume", "true",
                 probe=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"after epoch {done}" in r.stdout
    a = torch.load(ddp_runs["ffcv"] / "run" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if it had never been killed
    assert read(run / "metrics.json")["processes"] == 2


def test_a_silent_peer_times_out_instead_of_hanging(learnable_data, tmp_path):
    """Started without torchrun's supervision: a stopped peer is noticed by the timeout."""
    run, port = tmp_path / "run", _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "FFCV_RESNET_DIST_TIMEOUT": "5", "PROBE_DIR": str(tmp_path)}
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "dist_probe.py"), "--data.dir",
             str(learnable_data), "--run.dir", str(run), *TRAIN_ARGS], cwd=ROOT, text=True,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        _until(lambda: (run / "history.jsonl").exists() or procs[0].poll() is not None,
               "epoch 1")
        procs[1].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = procs[0].communicate(timeout=120)
        assert procs[0].returncode == 4 and time.monotonic() - stopped < 60
        assert err.count("\n") == 1 and "did not answer (timeout 5 s)" in err
    finally:
        procs[1].kill()
        procs[1].wait()


def test_bad_options_under_torchrun_give_one_line_and_touch_nothing(learnable_data, tmp_path):
    r = torchrun("--data.dir", learnable_data, "--run.dir", tmp_path / "run", *TRAIN_ARGS,
                 "--training.batch_size", "33", probe=False, timeout=300)
    # every line that says "error:" anywhere (a "rank 1: error: ..." too): rank 0's alone
    ours = [line for line in r.stderr.splitlines() if "error:" in line]
    assert r.returncode != 0 and "exitcode: 2" in r.stderr, r.stderr[-2000:]  # torchrun's: 1
    assert len(ours) == 1 and ours[0].startswith("error:"), r.stderr[-2000:]
    assert "must divide by the 2 processes" in ours[0] and not (tmp_path / "run").exists()
    r = torchrun("--data.dir", learnable_data, "--run.dir", tmp_path / "run", *TRAIN_ARGS,
                 "--data.order", "quasi_random", probe=False, timeout=300)
    ours = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(ours) == 1 and ours[0].startswith("error:") and "quasi_random does not work" \
        in ours[0], r.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_stray_launch_environment_is_one_line_and_a_lone_process_does_not_wait_forever(
        learnable_data, tmp_path):
    args = ["scripts/train.py", "--data.dir", str(learnable_data), "--run.dir",
            str(tmp_path / "run"), *TRAIN_ARGS]
    base = {k: v for k, v in os.environ.items() if k not in (
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}

    def run(env: dict, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *args, *kw.get("extra", [])], cwd=ROOT,
                                text=True, env={**base, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    p = run({"WORLD_SIZE": "2"})  # no RANK: not started by torchrun
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err.splitlines() == [
        "error: WORLD_SIZE=2 but no RANK: start several processes with torchrun, or unset "
        "WORLD_SIZE for one"]
    p = run({"RANK": "1"}, extra=["--training.epochs", "0"])  # a leftover RANK, one process
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err.startswith("error: bad value 0 for --training.epochs")
    alone = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(_free_port())}
    p = run({**alone, "FFCV_RESNET_DIST_TIMEOUT": "3"})  # the other process never comes
    _, err = p.communicate(timeout=120)
    assert p.returncode == 4 and "could not join the other processes within 3 s" in err
    port = _free_port()
    p = run({**alone, "MASTER_PORT": str(port)})  # 600 s to wait, but SIGTERM ends it
    _until(lambda: _listening(port) or p.poll() is not None, "the rendezvous", timeout=120)
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and time.monotonic() - stopped < 10 and "interrupted" in err
    assert not (tmp_path / "run").exists()


def test_the_loader_thread_count_causes_no_recompile(learnable_data, tmp_path):
    """FFCV's __iter__ sets torch's thread count to its workers; restored after each pass,
    Dynamo's guard on it holds: with one loader thread, and in each of 2 torchrun processes
    (which share the cores), as many graphs are compiled as with the loader at the default, or
    as with the resident loader, which never runs FFCV's epoch."""
    counts = {}
    cases = (("default", "0", 1, "ffcv"), ("one-worker", "1", 1, "ffcv"),
             ("ddp", "0", 2, "ffcv"), ("ddp-resident", "0", 2, "resident"))
    for name, workers, procs, loader in cases:
        root = tmp_path / name
        root.mkdir()
        args = ["--data.dir", learnable_data, "--run.dir", root / "run", *TRAIN_ARGS,
                "--training.compile", "on", "--data.workers", workers, "--data.loader", loader]
        env = {"PROBE_DIR": str(root), "PROBE_COMPILES": "1"}
        r = (torchrun(*args, env=env) if procs == 2 else subprocess.run(
            [sys.executable, str(ROOT / "tests" / "dist_probe.py"), *map(str, args)], cwd=ROOT,
            text=True, capture_output=True, timeout=600, env={**os.environ, **env}))
        assert r.returncode == 0, r.stderr[-3000:]
        counts[name] = len(read(root / "rank0-compiles.json"))
    assert counts["default"] >= 2  # the training and the evaluation graphs at least
    assert counts["one-worker"] == counts["default"], counts
    assert counts["ddp"] == counts["ddp-resident"], counts  # DDP splits graphs at its buckets


def test_a_process_beyond_the_gpus_binds_none(monkeypatch):
    """torchrun with more processes than GPUs: the extra process does not call set_device (a
    raw CUDA error in it alone); `place` then stops every process with one line."""
    import torch
    from ffcv_resnet.errors import UserError
    from ffcv_resnet.training import distributed as D
    bound = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    for local in ("0", "1"):
        monkeypatch.setenv("LOCAL_RANK", local)
        D.bind_gpu()
    assert bound == [0]
    with pytest.raises(UserError, match="local rank 1 has no GPU"):
        D.place(torch.device("cuda"), D.World(rank=1, size=2, local_rank=1, local_size=2))
