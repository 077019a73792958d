"""A run in process: divergence and NaN stop it with what was kept, every file carries the run
id, one run per folder, resume keeps its recipe, and the options rarely used."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, run_script, strict_json, TRAIN_ARGS, wait_until

from ffcv_resnet.config import ConfigError
from ffcv_resnet.errors import TrainingFailed, UserError
from ffcv_resnet.run_folder import RunFolder


def _train_in_process(data, run_dir, *extra):
    from ffcv_resnet.finished.settings import parse_config
    from ffcv_resnet.training.runner import train_run
    cfg = parse_config(["--data.dir", str(data), "--run.dir", str(run_dir), *map(str, TRAIN_ARGS),
                        *map(str, extra)])
    return train_run(cfg, log=lambda *a, **k: None)


def _run_id(run_dir):
    import yaml
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text())["run_id"]
    except (OSError, TypeError, KeyError):
        return None


def test_divergence_stops_the_run_and_keeps_the_last_good_epoch(learnable_data, tmp_path,
                                                                monkeypatch):
    from ffcv_resnet.data import augment
    calls = {"n": 0}
    real = augment.BatchAugment.__call__

    def poisoned(self, images, *where):  # epoch 2's third batch turns NaN (5 batches an epoch)
        calls["n"] += 1
        x = real(self, images, *where)
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
    history = [strict_json(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]


def test_every_file_of_a_run_carries_its_id_and_is_strict_json(trained_run):
    from ffcv_resnet.png import png_run_id
    import yaml
    metrics = strict_json((trained_run / "metrics.json").read_text())
    run_id = metrics["run_id"]
    assert yaml.safe_load((trained_run / "config.yaml").read_text())["run_id"] == run_id
    assert strict_json((trained_run / "errors.json").read_text())["run_id"] == run_id
    assert {strict_json(x)["run_id"] for x in (trained_run / "history.jsonl").read_text().splitlines()} \
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
    old = strict_json((run_dir / "metrics.json").read_text())["run_id"]
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   *TRAIN_ARGS, timeout=120)
    assert r.returncode == 2 and f"holds run {old} (complete)" in r.stderr
    assert strict_json((run_dir / "metrics.json").read_text())["run_id"] == old  # untouched
    # a second run killed before it finishes, with --run.overwrite: the old files are gone first
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--data.dir", str(learnable_data),
                          "--run.dir", str(run_dir), *TRAIN_ARGS, "--run.overwrite", "true"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _run_id(run_dir) not in (None, old), p)
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
    other = strict_json((mixed / "errors.json").read_text())
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


def test_resume_refuses_an_edited_config_and_accepts_auto_options(trained_run, learnable_data,
                                                                  tmp_path):
    from ffcv_resnet.finished.settings import parse_config
    from ffcv_resnet.training.runner import train_run
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


def test_a_run_written_before_flip_modes_resumes_with_its_boolean(trained_run, tmp_path):
    from ffcv_resnet.finished.settings import parse_config
    old = yaml.safe_load((trained_run / "config.yaml").read_text())
    old["augment"]["flip"] = True  # as runs wrote it when flip was a boolean
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = parse_config(["--run.dir", str(tmp_path / "r"), "--run.resume", "true"])
    assert cfg.augment.flip == "random"
    with pytest.raises(ConfigError, match="a resumed run keeps its recipe"):
        parse_config(["--run.dir", str(tmp_path / "r"), "--run.resume", "true",
                      "--augment.flip", "alternate"])
