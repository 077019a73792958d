"""scripts/train.py: it learns and writes a complete run folder with either loader; bad options,
configs and folders are one line; SIGTERM stops it like Ctrl-C; --help lists every option."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, run_script, TRAIN_ARGS, write_batches

from ffcv_resnet.run_folder import RunFolder
from ffcv_resnet.training.recipe import TrainConfig


pytestmark = pytest.mark.slow  # every test here starts a process


@dataclasses.dataclass(frozen=True)
class OnlyTraining:
    training: TrainConfig


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


def test_a_log_file_gets_no_progress_bar_unless_asked(learnable_data, tmp_path):
    """With stderr a pipe (a log file, nohup), neither training's bar (--run.progress auto) nor
    explain's gallery bar is drawn: their carriage returns would fill the log; --run.progress on
    still draws training's (which shows the check would see a bar)."""
    args = [a for a in TRAIN_ARGS if a not in ("--run.progress", "off")]
    assert len(args) == len(TRAIN_ARGS) - 2
    args[args.index("--training.epochs") + 1] = "1"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir",
                   tmp_path / "r", *args, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "batch/s" not in r.stderr, r.stderr[-2000:]  # (a pipe's \r reads as \n here)
    r = run_script("scripts/explain.py", "--run.dir", tmp_path / "r", "--data.dir",
                   learnable_data, "--explain.scored", "2", "--explain.screenshot", "off",
                   timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "page/s" not in r.stderr, r.stderr[-2000:]
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir",
                   tmp_path / "on", *args, "--run.progress", "on", timeout=300)
    assert r.returncode == 0 and "batch/s" in r.stderr, r.stderr[-2000:]


def test_a_folder_in_use_is_refused(learnable_data, tmp_path):
    with RunFolder(tmp_path / "r"):
        r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir",
                       tmp_path / "r", *TRAIN_ARGS, timeout=120)
    assert r.returncode == 2 and "in use by another process" in r.stderr


def test_training_learns_and_writes_a_complete_run_folder(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.4  # 10 classes: chance is 0.1
    for key in ("per_class_accuracy", "train_seconds", "compile_seconds", "total_seconds",
                "images_per_second", "device", "torch", "seed"):
        assert key in metrics
    assert metrics["peak_lr"] == pytest.approx(0.8 * 32 / 512)  # lr x batch / 512: 0.05
    assert 0 < metrics["eval_seconds"] < metrics["total_seconds"]
    assert 0 < metrics["checkpoint_seconds"] < metrics["total_seconds"]
    assert metrics["train_seconds"] + metrics["eval_seconds"] < metrics["total_seconds"]
    assert metrics["compile"] == "off" and metrics["compile_seconds"] == 0.0  # the CPU: auto
    assert metrics["images_per_second"] == pytest.approx(
        3 * (160 // 32) * 32 / metrics["train_seconds"], rel=0.02)  # 3 epochs of 5 batches
    assert set(metrics["per_class_accuracy"]) == {"airplane", "automobile", "bird", "cat", "deer",
                                                  "dog", "frog", "horse", "ship", "truck"}
    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().split("\n")
               if line]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all({"lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                "train_seconds", "images_per_second"} <= set(h) for h in history)
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["training"]["epochs"] == 3 and config["augment"]["cutout"] == 8
    assert (trained_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = json.loads((trained_run / "errors.json").read_text())["errors"]
    assert len(errors) == metrics["errors"] == round((1 - metrics["test_accuracy"]) * 60)
    assert all(e["true"] != e["predicted"] for e in errors)


def test_resident_loader_path_trains_too(learnable_data, tmp_path):
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", tmp_path / "r",
                   *TRAIN_ARGS, "--data.loader", "resident")
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["loader"] == "resident"
    assert metrics["test_accuracy"] > 0.2  # it learns (chance: 0.1)
    history = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text()
               .splitlines()]
    assert [h["train_images"] for h in history] == [160, 160, 160]  # 5 full batches of 32
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert not (tmp_path / "r" / "last.pt").exists()  # a complete run keeps no resume point


@pytest.mark.parametrize("args,message", [
    (["--training.precision", "fp8"], "bad value 'fp8' for --training.precision"),
    (["--training.tta", "nope"], "bad value 'nope' for --training.tta"),
    (["--training.epochs", "2.5"], "bad value '2.5' for --training.epochs"),
    (["--training.epocs", "3"], "unrecognized arguments: --training.epocs"),
    (["--data.dir", "/nonexistent"], "no cifar10.json"),
    (["--training.momentum", "0"], "--training.momentum"),  # Nesterov needs momentum > 0
    (["--training.momentum", "1"], "--training.momentum"),
    (["--data.source", "x.tar.gz"], "unrecognized arguments: --data.source"),  # prepare's
    (["--data.force", "true"], "unrecognized arguments: --data.force"),
])
def test_bad_config_exits_non_zero_with_one_line(args, message, learnable_data, tmp_path):
    base = ["--data.dir", learnable_data, "--run.dir", tmp_path / "r"]
    r = run_script("scripts/train.py", *base, *args, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "r").exists()


def test_yaml_recipes_are_strict_and_the_command_line_wins(tmp_path, learnable_data):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epochs: 3\n  lr_peak: 0.1\n")
    r = run_script("scripts/train.py", "-C", bad, "--data.dir", learnable_data, timeout=120)
    assert r.returncode != 0 and "unknown option 'training.lr_peak'" in r.stderr
    from ffcv_resnet.config import parse
    good = tmp_path / "good.yaml"
    good.write_text("training:\n  epochs: 7\n  tta: none\n  lr: 0.3\n")
    os.environ["training.epochs"] = "99"  # fastargs would let this win; we ignore the environment
    try:
        cfg = parse(OnlyTraining, ["-C", str(good), "--training.lr", "0.2"])
    finally:
        del os.environ["training.epochs"]
    assert (cfg.training.epochs, cfg.training.tta, cfg.training.lr) == (7, "none", 0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):  # parsed settings never change
        cfg.training.epochs = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training = TrainConfig()


def test_help_lists_every_option_with_its_default():
    r = run_script("scripts/train.py", "--help", timeout=120)
    assert r.returncode == 0
    for option in ("--training.epochs", "--training.compile_mode", "--data.loader", "--run.dir",
                   "--augment.cutout", "--data.dir"):
        assert option in r.stdout
    text = " ".join(r.stdout.split())  # argparse wraps the help lines
    text = text[text.index("options:"):]  # the option list, after the usage line
    precision = text[text.index("--training.precision"):text.index("--training.channels_last")]
    assert "(default: 20)" in text and "(default: 'auto')" in precision  # not a resolved value


@pytest.mark.parametrize("script,takes,not_taken", [
    ("scripts/train.py", ["--data.dir", "--data.loader", "--data.workers", "--data.train_subset"],
     ["--data.source", "--data.force"]),
    ("scripts/explain.py", ["--data.dir"], ["--data.source", "--data.force", "--data.loader",
                                            "--data.workers", "--data.order", "--data.os_cache",
                                            "--data.train_subset", "--data.test_subset"]),
    ("scripts/compare.py", ["--data.dir"], ["--data.source", "--data.loader", "--data.workers"]),
    ("scripts/prepare_data.py", ["--data.dir", "--data.source", "--data.force", "--data.workers"],
     ["--data.loader", "--data.train_subset"]),
    ("scripts/reproduce.py", ["--data.dir", "--data.source"], ["--data.force", "--data.loader"]),
])
def test_each_script_declares_only_the_data_options_it_uses(script, takes, not_taken):
    """A strict parser must refuse an option that would do nothing."""
    r = run_script(script, "--help", timeout=120)
    assert r.returncode == 0, r.stderr
    offered = set(re.findall(r"--data\.\w+", r.stdout))
    assert set(takes) <= offered and not offered & set(not_taken), offered


def test_wrong_training_labels_sink_to_the_bottom_of_the_aum_ranking(tmp_path):
    """Ten of 160 training images given another class's label: train_dynamics.npz ranks them
    lowest by AUM, far above chance, with every image seen every epoch."""
    import numpy as np
    from conftest import learnable_split
    from ffcv_resnet.data.convert import prepare
    train = learnable_split(16, 0)
    flipped = np.random.default_rng(5).choice(len(train.labels), 10, replace=False)
    labels = train.labels.copy()
    labels[flipped] = (labels[flipped] + 1 + np.arange(10) % 9) % 10  # another class each
    src = write_batches(tmp_path / "cifar-10-batches-py",
                        {"train": type(train)(train.images, labels),
                         "test": learnable_split(6, 1)})
    prepare(tmp_path / "data", str(src), log=lambda *_: None)
    run = tmp_path / "run"
    r = run_script("scripts/train.py", "--data.dir", tmp_path / "data", "--run.dir", run,
                   *TRAIN_ARGS, "--training.epochs", "6", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    d = np.load(run / "train_dynamics.npz")
    assert str(d["run_id"]) == json.loads((run / "metrics.json").read_text())["run_id"]
    assert d["seen_epochs"].tolist() == [6] * 160 and d["label"].tolist() == labels.tolist()
    lowest = set(np.argsort(d["aum"])[:20].tolist())
    assert len(lowest & set(flipped.tolist())) >= 8  # chance: 20 / 160 of 10, about 1


def test_label_issues_in_errors_json_are_cleanlabs_on_the_runs_test_probabilities(trained_run):
    import numpy as np
    from cleanlab.filter import find_label_issues
    t = np.load(trained_run / "test_probs.npz")
    errors = json.loads((trained_run / "errors.json").read_text())["errors"]
    assert t["probs"].shape == (60, 10) and np.allclose(t["probs"].sum(1), 1, atol=1e-5)
    mask = find_label_issues(labels=t["label"], pred_probs=t["probs"])
    flagged = set(t["index"][mask].tolist())
    assert errors and all(e["label_issue"] == (e["index"] in flagged) for e in errors)
    wrong = {e["index"] for e in errors}
    assert wrong == set(t["index"][t["probs"].argmax(1) != t["label"]].tolist())
