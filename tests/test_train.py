"""Model, training loop and run folder: learns a toy task, writes a complete, reloadable run."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch
import yaml

from conftest import TRAIN_ARGS, run_script
from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.finished.evaluate import find_errors, predict
from ffcv_resnet.data.loaders import load_all
from ffcv_resnet.model import count_parameters, resnet18, summary
from ffcv_resnet.finished.checkpoint import load_checkpoint
from ffcv_resnet.training.recipe import TrainConfig, make_optimizer, make_schedule
from ffcv_resnet.training.loop import make_step, warm_up

CPU = torch.device("cpu")


def test_model_is_the_seeds_resnet18_with_its_own_normalisation():
    import ffcv_resnet
    model = ffcv_resnet.resnet18(num_classes=10)
    assert count_parameters(model) == 11_173_962
    table = summary(model)
    assert "Total params: 11,173,962" in table and "Params size (MB): 42.63" in table
    rows = [line.split()[0] for line in table.splitlines() if "-" in line.split()[0][1:-1]]
    kinds = [r.rsplit("-", 1)[0] for r in rows]
    assert (kinds.count("Conv2d"), kinds.count("BatchNorm2d"), kinds.count("BasicBlock"),
            kinds.count("Linear")) == (20, 20, 8, 1)
    assert "[-1, 64, 32, 32]" in table and "[-1, 512, 4, 4]" in table
    # normalisation lives inside forward(): what conv1 really receives is (x - mean) / std
    from ffcv_resnet.data.cifar import MEAN, STD
    seen = []
    model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    model.eval()
    with torch.no_grad():
        model(torch.tensor(MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32))  # the mean image
        model(torch.ones(1, 3, 32, 32))  # white
    assert torch.allclose(seen[0], torch.zeros(1, 3, 32, 32), atol=1e-6)
    white = [(1 - m) / s for m, s in zip(MEAN, STD)]  # 2.06, 2.12, 2.11 by hand
    assert torch.allclose(seen[1][0, :, 5, 7], torch.tensor(white), atol=1e-5)


def test_lr_factors_written_out_by_hand():
    """10 steps, the peak at step 4, starting at 0.2: up by 0.2 a step to 1, then down to 0
    at the last step (not the formula of lr_factor copied, its values)."""
    from ffcv_resnet.training.recipe import lr_factor
    assert [round(lr_factor(k, 10, 4, 0.2), 6) for k in range(10)] == \
        [0.4, 0.6, 0.8, 1.0, 0.833333, 0.666667, 0.5, 0.333333, 0.166667, 0.0]
    assert [round(lr_factor(k, 6, 2), 6) for k in range(6)] == [0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert [lr_factor(k, 4, 10) for k in range(4)] == [0.5, 1.0, 0.5, 0.0]  # peak moved to mid
    assert lr_factor(0, 1, 1) == 1.0  # a one-step run takes its step at the peak


def test_schedule_is_triangular_and_weight_decay_skips_norms_and_biases():
    cfg = TrainConfig(epochs=10, peak_epoch=2, lr=0.4)
    model = resnet18()
    opt = make_optimizer(model, cfg, CPU)
    sched = make_schedule(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 19
    assert lrs[0] == pytest.approx(0.02) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    decay, no_decay = opt.param_groups
    assert no_decay["weight_decay"] == 0 and all(p.ndim == 1 for p in no_decay["params"])
    assert decay["weight_decay"] == cfg.weight_decay and all(p.ndim > 1 for p in decay["params"])


def test_step_feeds_the_model_inputs_in_its_memory_format():
    seen = []
    for channels_last in (True, False):
        cfg = TrainConfig(batch_size=2, precision="fp32", compile="off",
                          channels_last=channels_last)
        model = resnet18()
        model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(
            args[0].is_contiguous(memory_format=torch.channels_last)))
        step = make_step(model, model, cfg, CPU, steps_per_epoch=1)
        x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        step(x, torch.tensor([0, 1]))
    assert seen == [True, False]


class _OneOutputBuffer(torch.nn.Module):
    """A model that, like one compiled with CUDA graphs, returns the same fp32 output buffer
    from every call, rewritten by the next one."""

    def __init__(self, reuse: bool):
        super().__init__()
        self.reuse, self.weight = reuse, torch.nn.Parameter(torch.randn(3 * 32 * 32, 10))
        self.register_buffer("out", torch.zeros(0))

    def forward(self, x):
        logits = x.flatten(1) @ self.weight
        if not self.reuse:
            return logits
        if self.out.shape != logits.shape:
            self.out = torch.zeros_like(logits)
        return self.out.copy_(logits)


@pytest.mark.parametrize("tta", ["none", "flip", "flip_translate"])
def test_evaluation_keeps_no_output_buffer_the_next_call_rewrites(tta):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    fresh, reused = _OneOutputBuffer(False), _OneOutputBuffer(True)
    reused.load_state_dict(fresh.state_dict())
    expected = predict(fresh, images, batch_size=4, tta=tta)
    assert torch.equal(predict(reused, images, batch_size=4, tta=tta), expected)


def test_compile_uses_static_shapes(monkeypatch):
    """Training and evaluation batches differ: each must get a static graph, not a recompiled
    symbolic-batch one (Dynamo's automatic dynamic shapes)."""
    from ffcv_resnet.training.loop import prepare_model
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(kw) or m)
    prepare_model(resnet18(), TrainConfig(compile="on", compile_mode="reduce-overhead"), CPU)
    assert calls == [{"mode": "reduce-overhead", "dynamic": False}]


def test_test_time_augmentation_views_written_out_by_hand():
    """flip: the mean over the image and its left-right mirror; flip_translate: half that, plus a
    quarter of the same for the image shifted one pixel up-left and one down-right, reflect-
    padded. The views are built here with numpy, not with tta_logits' own operations."""
    torch.manual_seed(0)
    model = _OneOutputBuffer(False)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    x = images.numpy().astype(np.float32) / 255

    def f(views):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(views))).numpy()

    mirror = x[:, :, :, ::-1]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    up_left, down_right = padded[:, :, :32, :32], padded[:, :, 2:, 2:]
    flip = (f(x) + f(mirror)) / 2
    shifted = [(f(v) + f(v[:, :, :, ::-1])) / 2 for v in (up_left, down_right)]
    expected = {"none": f(x), "flip": flip,
                "flip_translate": 0.5 * flip + 0.25 * shifted[0] + 0.25 * shifted[1]}
    for tta, want in expected.items():
        got = predict(model, images, batch_size=3, tta=tta).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=tta)
    assert not np.allclose(expected["flip"], expected["none"], atol=1e-3)  # the views differ


def test_warm_up_restores_weights_and_optimiser_exactly():
    cfg = TrainConfig(batch_size=4, precision="fp32", compile="off")
    model = resnet18()
    step = make_step(model, model, cfg, CPU, steps_per_epoch=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen, evaluated = [], []
    model.fc.register_forward_hook(lambda m, args, out: seen.append(
        (m.training, args[0].shape[0], m.weight.detach().clone())))
    warm_up(model, step, lambda: evaluated.append(True), CPU)
    # it did warm up: two training steps at the recipe's batch (the weights moved between
    # them) and the evaluation, then everything was put back
    assert [(t, n) for t, n, _ in seen] == [(True, 4), (True, 4)] and evaluated == [True]
    assert not torch.equal(seen[0][2], seen[1][2])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert step.optimizer.state_dict()["state"] == {} and step.scheduler.last_epoch == 0


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


def test_checkpoint_reloads_weights_only_and_predicts_the_same(trained_run, learnable_data):
    blob = torch.load(trained_run / "model.pt", weights_only=True)
    assert blob["arch"] == "resnet18-cifar" and blob["test"]["count"] == 60
    model, _ = load_checkpoint(trained_run / "model.pt")
    precision = json.loads((trained_run / "metrics.json").read_text())["precision"]
    images, labels = load_all(beton_path(learnable_data, "test"), CPU)
    logits = predict(model, images, batch_size=32, tta="flip", precision=precision)
    recomputed = find_errors(logits, labels, torch.arange(60))
    saved = json.loads((trained_run / "errors.json").read_text())["errors"]
    assert [(e["index"], e["predicted"]) for e in recomputed] == \
           [(e["index"], e["predicted"]) for e in saved]


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


@dataclasses.dataclass(frozen=True)
class OnlyTraining:
    training: TrainConfig


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


def test_init_pytorch_gives_each_layers_own_default_and_nothing_else_changes():
    """torchvision's ResNet re-initialises convolutions Kaiming-normal (fan out, ReLU):
    std sqrt(2 / fan_out); PyTorch's default is uniform with std 1 / sqrt(3 fan_in), about
    2.45x smaller for a 3x3 64->64 convolution."""
    torch.manual_seed(0)
    tv = resnet18(init="torchvision")
    torch.manual_seed(0)
    pt = resnet18(init="pytorch")
    w_tv, w_pt = (m.layer1[0].conv1.weight.detach() for m in (tv, pt))  # 64 -> 64, 3x3
    fan = 64 * 9
    assert float(w_tv.std()) == pytest.approx((2 / fan) ** 0.5, rel=0.03)
    assert float(w_pt.std()) == pytest.approx(1 / (3 * fan) ** 0.5, rel=0.03)
    assert float(w_pt.abs().max()) <= 1 / fan ** 0.5  # uniform within the default's bound
    stem = pt.conv1.weight.detach()  # the stem too (model.py re-initialises it for torchvision)
    assert float(stem.std()) == pytest.approx(1 / (3 * 27) ** 0.5, rel=0.1)
    assert torch.equal(pt.bn1.weight, torch.ones(64)) and torch.equal(pt.bn1.bias, torch.zeros(64))
    assert [n for n, _ in tv.named_parameters()] == [n for n, _ in pt.named_parameters()]
    tv.load_state_dict(pt.state_dict())  # a saved model loads whatever its init was
    with pytest.raises(ValueError, match="init must be one of"):
        resnet18(init="xavier")


def test_decay_all_puts_batchnorm_and_biases_in_the_decayed_group():
    model = resnet18()
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
             for p in m.parameters()} | {id(model.fc.bias)}
    for decay, decayed_norms in (("weights", False), ("all", True)):
        opt = make_optimizer(model, TrainConfig(decay=decay), CPU)
        groups = [g for g in opt.param_groups if g["params"]]
        decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert (norms <= decayed) is decayed_norms and not (norms & decayed and not decayed_norms)
        assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
        assert {id(p) for p in model.parameters() if p.ndim > 1} <= decayed


def test_the_calibration_recipe_is_the_published_scripts_hyperparameters():
    """airbench/baselines/train_resnet18_94.py: batch 500, lr 0.2 at batch 500, a start of 0.2x,
    the peak at 20% of the steps, Nesterov 0.9, wd 5e-4 on every parameter, flip, translate 4,
    cutout 12 before the translate, no label smoothing, flip + translate TTA, 26 epochs,
    PyTorch's default initialisation."""
    from conftest import ROOT
    from ffcv_resnet.training.recipe import lr_factor, peak_lr
    from ffcv_resnet.training.runner import parse_config
    cfg = parse_config(["-C", str(ROOT / "configs" / "reference-26ep.yaml")])
    t, a = cfg.training, cfg.augment
    assert (t.epochs, t.batch_size, t.momentum, t.weight_decay, t.decay, t.label_smoothing,
            t.tta) == (26, 500, 0.9, 5e-4, "all", 0.0, "flip_translate")
    assert peak_lr(t) == pytest.approx(0.2)  # the LR the optimiser gets at batch 500
    steps = 26 * (50_000 // 500)
    peak = t.peak_epoch * (50_000 // 500)
    assert peak == int(0.2 * steps)  # the published peak step, 520 of 2,600
    # the published factor of step k is np.interp(k, [0, 520, 2600], [0.2, 1, 0]); ours is
    # that of step k + 1 (the one difference the recipe's header names)
    published = np.interp(np.arange(1, steps + 1), [0, int(0.2 * steps), steps], [0.2, 1, 0])
    ours = [lr_factor(k, steps, peak, t.lr_start) for k in range(steps)]
    assert np.allclose(ours, published)
    assert (a.pad, a.flip, a.cutout, a.order) == (4, "random", 12, "flip_cutout_translate")
    assert cfg.model.init == "pytorch"


def test_the_training_step_makes_no_host_sync(monkeypatch):
    """Per step nothing waits for the device: the syncs of an epoch of 5 batches are those of
    an epoch of 1 (the epoch's one read of its totals), with every lever on."""
    from syncs import counting_syncs
    from ffcv_resnet.data.augment import AugmentConfig, BatchAugment
    from ffcv_resnet.data.loaders import Batch
    from ffcv_resnet.training.loop import Epochs, train_one_epoch
    cfg = TrainConfig(batch_size=8, epochs=2, precision="fp32", compile="off", ema="lookahead",
                      ema_every=1, bn_bias_lr_scale=4.0)
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    data = [Batch(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (8,), generator=g), torch.arange(8 * k, 8 * k + 8))
            for k in range(5)]

    def syncs(batches):
        model = resnet18()
        step = make_step(model, model, cfg, cpu, steps_per_epoch=5)
        augment = BatchAugment(AugmentConfig(flip="alternate", cutout=8), cpu, images=40)
        with counting_syncs(monkeypatch) as seen:
            train_one_epoch(Epochs(step, batches, augment, None, cpu), epoch=1)
        return seen
    one, five = syncs(data[:1]), syncs(data)
    assert five == one, f"per-step syncs: {five - one}"
    assert one["tolist"] == 1  # the epoch's one read


def test_the_20_epoch_anchor_is_the_published_recipe_stretched_and_b_adds_only_its_levers():
    """configs/reference-20ep.yaml differs from the 26-epoch file in its epochs and its peak
    (still 20% of the steps), and the candidate B in the levers its header names."""
    from conftest import ROOT
    from ffcv_resnet.config import as_dict, flatten
    from ffcv_resnet.training.recipe import lr_factor
    from ffcv_resnet.training.runner import parse_config

    def recipe(name):
        return flatten(as_dict(parse_config(["-C", str(ROOT / "configs" / name)])))
    r26, r20, b = (recipe(n) for n in ("reference-26ep.yaml", "reference-20ep.yaml",
                                        "candidate-20ep.yaml"))
    assert {k for k in r26 if r26[k] != r20[k]} == {"training.epochs", "training.peak_epoch"}
    assert (r20["training.epochs"], r20["training.peak_epoch"]) == (20, 4.0)
    steps = 20 * (50_000 // 500)
    published = np.interp(np.arange(1, steps + 1), [0, int(0.2 * steps), steps], [0.2, 1, 0])
    ours = [lr_factor(k, steps, 4.0 * 100, r20["training.lr_start"]) for k in range(steps)]
    assert np.allclose(ours, published)
    assert {k: b[k] for k in b if b[k] != r20[k]} == {
        "augment.flip": "alternate", "training.label_smoothing": 0.2, "training.ema": "ema"}
