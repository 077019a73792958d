"""Resume after SIGKILL: bit-identical to the uninterrupted run, the default recipe and every
lever."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import ROOT, run_script, strict_json, TRAIN_ARGS, wait_for


pytestmark = pytest.mark.slow  # every test here starts a process


LEVERS = ["--training.ema", "lookahead", "--training.ema_every", "2", "--augment.flip",
          "alternate", "--training.bn_bias_lr_scale", "4", "--training.bn_momentum", "0.3"]


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(trained_run,
                                                                     learnable_data, tmp_path):
    """CPU, fixed seed: the resumed run's weights are bit-identical to the uninterrupted one's."""
    run_dir = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--data.dir", str(learnable_data),
                          "--run.dir", str(run_dir), *TRAIN_ARGS,
                          "--run.overwrite", "true"],  # as `make run` starts it
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(run_dir / "last.pt", p)  # epoch 1 is saved; epoch 2 (~2 s on this CPU) runs
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    done = len((run_dir / "history.jsonl").read_text().splitlines())
    assert done < 3
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   "--training.lr", "0.1", "--run.resume", "true", timeout=120)
    assert r.returncode == 2 and "a resumed run keeps its recipe" in r.stderr
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   "--run.resume", "true", "--run.keep_last", "true",
                   timeout=300)  # the recipe comes from config.yaml
    assert r.returncode == 0, r.stderr[-2000:]
    state = torch.load(run_dir / "last.pt", weights_only=True)  # kept, as asked
    assert state["epoch"] == 3 and state["run_id"] == strict_json(
        (run_dir / "metrics.json").read_text())["run_id"]
    assert "resuming run" in r.stdout and f"after epoch {done}" in r.stdout
    a = torch.load(trained_run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    m_a = strict_json((trained_run / "metrics.json").read_text())
    m_b = strict_json((run_dir / "metrics.json").read_text())
    assert m_a["test_accuracy"] == m_b["test_accuracy"] and m_b["epochs"] == 3
    assert [s["first_epoch"] for s in m_b["sessions"]] == [1, done + 1]
    assert m_b["train_seconds"] == pytest.approx(sum(
        h["train_seconds"] for h in map(strict_json, (run_dir / "history.jsonl").read_text().splitlines())))
    assert not list(run_dir.glob(".*.tmp"))
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   "--run.resume", "true", timeout=120)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_a_run_with_every_lever_resumes_bit_identically(trained_run, learnable_data, tmp_path):
    """Weight averaging, alternating flips and the BatchNorm levers survive a SIGKILL: the
    resumed run's weights (the average) equal an uninterrupted run's."""
    whole = tmp_path / "whole"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", whole,
                   *TRAIN_ARGS, *LEVERS, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--data.dir", str(learnable_data),
                          "--run.dir", str(run_dir), *TRAIN_ARGS, *LEVERS],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(run_dir / "last.pt", p)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL and not (run_dir / "metrics.json").exists()
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   "--run.resume", "true", timeout=300)
    assert r.returncode == 0 and "resuming run" in r.stdout, r.stderr[-2000:]
    a = torch.load(whole / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    plain = torch.load(trained_run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the levers changed what trained
    import numpy as np  # and every training image's dynamics came through the kill exactly
    da, db = np.load(whole / "train_dynamics.npz"), np.load(run_dir / "train_dynamics.npz")
    assert all(np.array_equal(da[k], db[k], equal_nan=True) for k in da.files if k != "run_id")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["training"]["ema"], cfg["augment"]["flip"]) == ("lookahead", "alternate")
