"""Honest runs: options checked before any work, a schedule right for any length, divergence
that fails, one run per folder, and resume after SIGKILL that ends where the uninterrupted run did."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TRAIN_ARGS, run_script
from ffcv_resnet.training import recipe as T
from ffcv_resnet.config import ConfigError
from ffcv_resnet.errors import TrainingFailed, UserError
from ffcv_resnet.model import resnet18
from ffcv_resnet.run_folder import RunFolder

CPU = torch.device("cpu")


def _strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


@pytest.mark.parametrize("args,message", [
    (["--training.epochs", "0"], "bad value 0 for --training.epochs"),
    (["--training.epochs", "-2"], "bad value -2 for --training.epochs"),
    (["--training.batch_size", "0"], "bad value 0 for --training.batch_size"),
    (["--training.eval_batch_size", "0"], "bad value 0 for --training.eval_batch_size"),
    (["--training.lr", "-1"], "bad value -1.0 for --training.lr"),
    (["--training.lr", "nan"], "bad value nan for --training.lr"),
    (["--training.lr", "inf"], "bad value inf for --training.lr"),
    (["--training.label_smoothing", "2"], "bad value 2.0 for --training.label_smoothing"),
    (["--training.label_smoothing", "1"], "bad value 1.0 for --training.label_smoothing"),
    (["--training.momentum", "1.5"], "bad value 1.5 for --training.momentum"),
    (["--training.device", "bogus"], "bad value 'bogus' for --training.device"),
    (["--training.peak_epoch", "0"], "bad value 0.0 for --training.peak_epoch"),
    (["--augment.pad", "-1"], "bad value -1 for --augment.pad"),
    (["--augment.cutout", "33"], "bad value 33 for --augment.cutout"),
    (["--data.train_subset", "-5"], "bad value -5 for --data.train_subset"),
    (["--run.checkpoint_every", "-1"], "bad value -1 for --run.checkpoint_every"),
    (["--run.resume", "true", "--run.overwrite", "true"], "exclude each other"),
    (["--training.epoch", "3"], "unrecognized arguments: --training.epoch 3"),  # no prefixes
    (["--training.momentum", "0"], "bad value 0.0 for --training.momentum"),  # Nesterov needs it
    (["--training.lr", "1e308", "--training.batch_size", "32"], "finite LR once scaled"),
    (["--data.workers", "100000000"], "bad value 100000000 for --data.workers"),
])
def test_every_bad_option_is_one_config_error(args, message, tmp_path):
    from ffcv_resnet.training.runner import parse_config
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(["--run.dir", str(tmp_path / "r"), *args])


@pytest.mark.parametrize("args,message", [
    (["--training.epoch", "3"], "unrecognized arguments: --training.epoch 3"),
    (["--training.device", "bogus"], "bad value 'bogus' for --training.device"),
    (["--data.train_subset", "40", "--training.batch_size", "50"],
     "--training.batch_size 50 is more than the 40 training images"),
    (["--training.batch_size", "512"], "is more than the 160 training images"),
    (["--run.dir", "FILE"], "exists and is not a folder"),
])
def test_bad_options_fail_in_one_line_before_data_and_warm_up(args, message, learnable_data,
                                                              tmp_path):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", tmp_path / "r",
                   *args, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and message in r.stderr
    assert "warm-up" not in r.stdout and not (tmp_path / "r").exists()


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 20])
@pytest.mark.parametrize("peak_epoch", [0.5, 1.0, 4.0, 30.0])
@pytest.mark.parametrize("steps", [1, 3, 97])
def test_schedule_rises_to_the_peak_and_ends_at_zero_for_any_length(epochs, peak_epoch, steps):
    cfg = T.TrainConfig(epochs=epochs, peak_epoch=peak_epoch, lr=0.4, batch_size=256)
    opt = T.make_optimizer(resnet18(), cfg, CPU)
    sched = T.make_schedule(opt, cfg, steps)
    lrs = []
    for _ in range(epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    top, total = int(np.argmax(lrs)), epochs * steps
    peak_step = min(max(1, round(peak_epoch * steps)), max(1, total // 2))  # at most mid-run
    assert max(lrs) == pytest.approx(T.peak_lr(cfg)) and top + 1 == peak_step
    assert lrs[0] == pytest.approx(T.peak_lr(cfg) / peak_step)  # rises from near zero...
    assert all(a < b for a, b in zip(lrs[:top], lrs[1:top + 1]))
    assert all(a > b for a, b in zip(lrs[top:], lrs[top + 1:]))  # ...then falls...
    if total > 1:
        assert lrs[-1] == 0.0  # ...to zero at the last step


def test_peak_lr_scales_linearly_with_the_batch():
    assert T.peak_lr(T.TrainConfig(lr=0.4, batch_size=512)) == pytest.approx(0.4)
    assert T.peak_lr(T.TrainConfig(lr=0.4, batch_size=256)) == pytest.approx(0.2)
    assert T.peak_lr(T.TrainConfig(lr=0.4, batch_size=1024)) == pytest.approx(0.8)


def _train_in_process(data, run_dir, *extra):
    from ffcv_resnet.training.runner import parse_config, train_run
    cfg = parse_config(["--data.dir", str(data), "--run.dir", str(run_dir), *map(str, TRAIN_ARGS),
                        *map(str, extra)])
    return train_run(cfg, log=lambda *a, **k: None)


def test_divergence_stops_the_run_and_keeps_the_last_good_epoch(learnable_data, tmp_path,
                                                                monkeypatch):
    from ffcv_resnet.data import augment
    calls = {"n": 0}
    real = augment.BatchAugment.__call__

    def poisoned(self, images):  # epoch 2's third batch turns NaN (5 batches per epoch)
        calls["n"] += 1
        x = real(self, images)
        return x * float("nan") if calls["n"] == 8 else x

    monkeypatch.setattr(augment.BatchAugment, "__call__", poisoned)
    run_dir = tmp_path / "r"
    with pytest.raises(TrainingFailed, match="diverged in epoch 2") as e:
        _train_in_process(learnable_data, run_dir)
    assert "1 epoch(s) completed" in str(e.value) and "last.pt holds epoch 1" in str(e.value)
    # docs/training.md's failure table shows this very line (numbers and the path aside)
    shown = re.search(r"`(error: training diverged in epoch [^`]*)`",
                      (ROOT / "docs" / "training.md").read_text()).group(1)

    def shape(line):
        return re.sub(r"\d+(\.\d+)?(e[+-]\d+)?", "N", re.sub(r"\S*last\.pt", "PATH", line))
    assert shape(shown) == shape(f"error: {e.value}")
    assert TrainingFailed.exit_code == 3
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.pt").exists()
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in
                                       state["state_dict"].values() if v.is_floating_point())
    history = [_strict(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]


def test_a_huge_lr_exits_3_with_one_line_and_no_metrics(learnable_data, tmp_path):
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", tmp_path / "r",
                   *TRAIN_ARGS, "--training.lr", "1e6", timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "error: training diverged in epoch 1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert not (tmp_path / "r" / "model.pt").exists()
    r = run_script("scripts/explain.py", "--run.dir", tmp_path / "r", "--data.dir",
                   learnable_data, timeout=120)
    assert r.returncode == 2 and "training did not finish" in r.stderr


def test_every_file_of_a_run_carries_its_id_and_is_strict_json(trained_run):
    from ffcv_resnet.png import png_run_id
    import yaml
    metrics = _strict((trained_run / "metrics.json").read_text())
    run_id = metrics["run_id"]
    assert yaml.safe_load((trained_run / "config.yaml").read_text())["run_id"] == run_id
    assert _strict((trained_run / "errors.json").read_text())["run_id"] == run_id
    assert {_strict(x)["run_id"] for x in (trained_run / "history.jsonl").read_text().splitlines()} \
        == {run_id}
    for name in ("model.pt", "last.pt"):  # last.pt: kept by --run.keep_last true
        assert torch.load(trained_run / name, weights_only=True)["run_id"] == run_id
    assert png_run_id(trained_run / "curves.png") == run_id
    assert len(metrics["sessions"]) == 1 and metrics["total_seconds"] > metrics["train_seconds"]


def test_one_run_per_folder_refuse_overwrite_and_mixed_files(trained_run, learnable_data,
                                                             tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "report.html").write_text("an explain output of the old run")
    old = _strict((run_dir / "metrics.json").read_text())["run_id"]
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   *TRAIN_ARGS, timeout=120)
    assert r.returncode == 2 and f"holds run {old} (complete)" in r.stderr
    assert _strict((run_dir / "metrics.json").read_text())["run_id"] == old  # untouched
    # a second run killed before it finishes, with --run.overwrite: the old files are gone first
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--data.dir", str(learnable_data),
                          "--run.dir", str(run_dir), *TRAIN_ARGS, "--run.overwrite", "true"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until(lambda: _run_id(run_dir) not in (None, old), p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not any((run_dir / n).exists() for n in ("metrics.json", "model.pt", "errors.json",
                                                      "curves.png", "report.html"))
    r = run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", learnable_data,
                   timeout=120)
    assert r.returncode == 2 and "incomplete" in r.stderr and "Traceback" not in r.stderr
    # files of two runs side by side: explain refuses them
    mixed = tmp_path / "mixed"
    shutil.copytree(trained_run, mixed)
    other = _strict((mixed / "errors.json").read_text())
    other["run_id"] = "someone-else"
    (mixed / "errors.json").write_text(json.dumps(other))
    r = run_script("scripts/explain.py", "--run.dir", mixed, "--data.dir", learnable_data,
                   timeout=120)
    assert r.returncode == 2 and "files of different runs" in r.stderr
    # a folder of someone else's files is never used (nor emptied)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a run's"):
        with RunFolder(foreign) as f:
            f.claim(overwrite=True, resume=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_folder_in_use_is_refused(learnable_data, tmp_path):
    with RunFolder(tmp_path / "r"):
        r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir",
                       tmp_path / "r", *TRAIN_ARGS, timeout=120)
    assert r.returncode == 2 and "in use by another process" in r.stderr


def _run_id(run_dir):
    import yaml
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text())["run_id"]
    except (OSError, TypeError, KeyError):
        return None


def _wait_for(path, proc, timeout=300):
    _wait_until(path.exists, proc, timeout)


def _wait_until(ready, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(trained_run,
                                                                     learnable_data, tmp_path):
    """CPU, fixed seed: the resumed run's weights are bit-identical to the uninterrupted one's."""
    run_dir = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--data.dir", str(learnable_data),
                          "--run.dir", str(run_dir), *TRAIN_ARGS,
                          "--run.overwrite", "true"],  # as `make run` starts it
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(run_dir / "last.pt", p)  # epoch 1 is saved; epoch 2 (~2 s on this CPU) runs
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
    assert state["epoch"] == 3 and state["run_id"] == _strict(
        (run_dir / "metrics.json").read_text())["run_id"]
    assert "resuming run" in r.stdout and f"after epoch {done}" in r.stdout
    a = torch.load(trained_run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    m_a = _strict((trained_run / "metrics.json").read_text())
    m_b = _strict((run_dir / "metrics.json").read_text())
    assert m_a["test_accuracy"] == m_b["test_accuracy"] and m_b["epochs"] == 3
    assert [s["first_epoch"] for s in m_b["sessions"]] == [1, done + 1]
    assert m_b["train_seconds"] == pytest.approx(sum(
        h["train_seconds"] for h in map(_strict, (run_dir / "history.jsonl").read_text().splitlines())))
    assert not list(run_dir.glob(".*.tmp"))
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   "--run.resume", "true", timeout=120)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_odd_yaml_and_huge_peaks_are_handled(tmp_path):
    from ffcv_resnet.training.runner import parse_config
    for text, message in [(b"\x00\xff", "cannot read config"),
                          (b"training:\n  epochs: null\n", "no value for 'training.epochs'"),
                          (b"run:\n  dir:\n", "no value for 'run.dir'")]:
        (tmp_path / "c.yaml").write_bytes(text)
        with pytest.raises(ConfigError, match=message):
            parse_config(["-C", str(tmp_path / "c.yaml")])
    cfg = T.TrainConfig(epochs=2, peak_epoch=1e308)  # moved to mid-run, no overflow
    opt = T.make_optimizer(resnet18(), cfg, CPU)
    sched = T.make_schedule(opt, cfg, 4)
    assert opt.param_groups[0]["lr"] == pytest.approx(T.peak_lr(cfg) / 4) and sched


def test_unusable_or_refused_folders_get_one_line_and_nothing_written(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for bad in (tmp_path / "file" / "sub", tmp_path / "dangling"):
        with pytest.raises(UserError, match="cannot be used as a run folder|not a folder"):
            RunFolder(bad)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "victim.txt").write_text("keep me")
    (foreign / ".lock").symlink_to(foreign / "victim.txt")
    with pytest.raises(UserError, match="not a run's"):
        RunFolder(foreign)
    assert (foreign / "victim.txt").read_text() == "keep me"
    with RunFolder(tmp_path / "new"):  # created, then left empty: removed again
        pass
    assert not (tmp_path / "new").exists()


def test_resume_refuses_an_edited_config_and_accepts_auto_options(trained_run, learnable_data,
                                                                  tmp_path):
    from ffcv_resnet.training.runner import parse_config, train_run
    run_dir = tmp_path / "r"
    shutil.copytree(trained_run, run_dir)
    for name in ("metrics.json", "model.pt", "errors.json", "curves.png"):
        (run_dir / name).unlink()  # as if killed after its last checkpoint
    config = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(config.replace("lr: 0.8", "lr: 80.0"))
    with pytest.raises(UserError, match="training.lr is 80.0 but the run trained with 0.8"):
        train_run(parse_config(["--run.dir", str(run_dir), "--run.resume", "true",
                                "--data.dir", str(learnable_data)]), log=lambda *a, **k: None)
    (run_dir / "config.yaml").write_text(config)
    cfg = parse_config(["--run.dir", str(run_dir), "--run.resume", "true", "--data.dir",
                        str(learnable_data), "--training.precision", "auto",
                        "--training.compile", "auto", "--training.device", "cpu"])
    m = train_run(cfg, log=lambda *a, **k: None)  # evaluates the trained epochs, then completes
    assert m.epochs == 3 and (run_dir / "metrics.json").exists()


def test_explain_refuses_a_missing_history_and_a_layer_without_feature_maps(trained_run,
                                                                           learnable_data,
                                                                           tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(trained_run, run_dir)
    r = run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", learnable_data,
                   "--explain.layer", "fc", timeout=120)
    assert r.returncode == 2 and "layer 'fc' gives no feature map" in r.stderr
    assert "Traceback" not in r.stderr
    (run_dir / "history.jsonl").unlink()
    r = run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", learnable_data,
                   timeout=120)
    assert r.returncode == 2 and "history.jsonl holds 0 epochs" in r.stderr


def test_per_class_accuracy_of_an_absent_class_is_null():
    from ffcv_resnet.finished.evaluate import metrics
    logits = torch.eye(10)[[0, 1, 1]]
    m = metrics(logits, torch.tensor([0, 1, 2]))
    assert m["per_class_accuracy"][:3] == [1.0, 1.0, 0.0] and m["per_class_accuracy"][3] is None


def test_a_nan_test_loss_stops_the_run_like_a_divergence(learnable_data, tmp_path,
                                                         monkeypatch):
    """Finite training, but evaluation's loss is NaN (a broken eval path): exit 3, no model."""
    from ffcv_resnet.training import engine
    real = engine.metrics
    calls = {"n": 0}

    def nan_on_the_second(logits, labels, n):
        m = real(logits, labels, n)
        calls["n"] += 1
        return {**m, "loss": float("nan")} if calls["n"] == 2 else m  # epoch 1, then 2 (no
    # warm-up evaluation: compile is off on the CPU)
    monkeypatch.setattr(engine, "metrics", nan_on_the_second)
    run_dir = tmp_path / "r"
    with pytest.raises(TrainingFailed, match="diverged in epoch 2: the test loss is nan"):
        _train_in_process(learnable_data, run_dir)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.pt").exists()


def test_rarely_used_options_do_what_they_say(learnable_data, tmp_path):
    """eval_every, checkpoint_every, run.summary, os_cache off; config.yaml holds what the run
    computed resolved (precision, compile), never 'auto'; where it ran (device, progress) as
    given, for a resume to resolve again."""
    run_dir = tmp_path / "r"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   *TRAIN_ARGS, "--training.eval_every", "2", "--run.checkpoint_every", "2",
                   "--run.summary", "true", "--data.os_cache", "false", "--run.keep_last",
                   "true", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Total params: 11,173,962" in r.stdout  # the layer table
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert ["test_accuracy" in h for h in history] == [False, True, True]  # 2, and the last
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["os_cache"] is False and config["training"]["eval_every"] == 2
    assert config["training"]["precision"] in ("bf16", "fp32")  # resolved on this device
    assert config["training"]["compile"] == "off"
    where = {("training", "device"), ("run", "progress")}
    flat = [v for name, section in config.items() if isinstance(section, dict)
            for key, v in section.items() if (name, key) not in where]
    assert "auto" not in flat
    assert torch.load(run_dir / "last.pt", weights_only=False)["epoch"] in (2, 3)


LEVERS = ["--training.ema", "lookahead", "--training.ema_every", "2", "--augment.flip",
          "alternate", "--training.bn_bias_lr_scale", "4", "--training.bn_momentum", "0.3"]


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
    _wait_for(run_dir / "last.pt", p)
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
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["training"]["ema"], cfg["augment"]["flip"]) == ("lookahead", "alternate")


def test_a_run_written_before_flip_modes_resumes_with_its_boolean(trained_run, tmp_path):
    from ffcv_resnet.training.runner import parse_config
    old = yaml.safe_load((trained_run / "config.yaml").read_text())
    old["augment"]["flip"] = True  # as runs wrote it when flip was a boolean
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = parse_config(["--run.dir", str(tmp_path / "r"), "--run.resume", "true"])
    assert cfg.augment.flip == "random"
    with pytest.raises(ConfigError, match="a resumed run keeps its recipe"):
        parse_config(["--run.dir", str(tmp_path / "r"), "--run.resume", "true",
                      "--augment.flip", "alternate"])
