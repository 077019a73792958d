"""The recipe: the LR rule and triangular schedule written out by hand, weight decay's groups,
BatchNorm biases' LR and BatchNorm momentum, and the reference recipes against the published
script."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from conftest import CPU

from ffcv_resnet.model import resnet18
from ffcv_resnet.training import recipe as T
from ffcv_resnet.training.loop import make_step
from ffcv_resnet.training.recipe import (make_optimizer, make_schedule, peak_lr, set_bn_momentum,
                                         TrainConfig)


def test_batchnorm_biases_train_at_a_multiple_of_the_lr_with_their_decay_divided():
    model = resnet18()
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    for decay in ("all", "weights"):
        cfg = TrainConfig(bn_bias_lr_scale=64.0, decay=decay, weight_decay=5e-4)
        groups = make_optimizer(model, cfg, CPU).param_groups
        assert len(groups) == 3
        biases = groups[2]
        assert {id(p) for p in biases["params"]} == bn_biases and len(bn_biases) == 20
        assert biases["lr"] == pytest.approx(64 * peak_lr(cfg))
        assert biases["weight_decay"] == pytest.approx(5e-4 / 64 if decay == "all" else 0.0)
        others = {id(p) for g in groups[:2] for p in g["params"]}
        assert others.isdisjoint(bn_biases) and len(others) + 20 == len(list(model.parameters()))
        assert groups[0]["lr"] == pytest.approx(peak_lr(cfg))
    assert len(make_optimizer(model, TrainConfig(), CPU).param_groups) == 2  # 1: as before


def test_the_schedule_scales_the_biases_lr_with_the_rest():
    cfg = TrainConfig(bn_bias_lr_scale=8.0, epochs=2, peak_epoch=1)
    model = resnet18()
    step = make_step(model, model, dataclasses.replace(cfg, precision="fp32"), CPU, 2)
    lrs = [[g["lr"] for g in step.optimizer.param_groups]]
    step.scheduler.step()
    lrs.append([g["lr"] for g in step.optimizer.param_groups])
    for row in lrs:
        assert row[2] == pytest.approx(8 * row[0]) and row[0] == row[1]
    assert lrs[0][0] != lrs[1][0]


def test_batchnorm_momentum_is_set_on_every_batchnorm_layer():
    model = resnet18()
    set_bn_momentum(model, 0.4)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20 and all(m.momentum == 0.4 for m in bns)


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 20])
@pytest.mark.parametrize("peak_epoch", [0.5, 1.0, 4.0, 30.0])
@pytest.mark.parametrize("steps", [1, 3, 97])
def test_schedule_rises_to_the_peak_and_ends_at_zero_for_any_length(epochs, peak_epoch, steps):
    cfg = T.TrainConfig(epochs=epochs, peak_epoch=peak_epoch, lr=0.4, batch_size=256,
                        lr_start=0.0)
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
    cfg = TrainConfig(epochs=10, peak_epoch=2, lr=0.4, lr_start=0.0, decay="weights",
                      batch_size=512)
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
    from ffcv_resnet.finished.settings import parse_config
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


def test_the_20_epoch_anchor_is_the_published_recipe_stretched_and_b_adds_only_its_levers():
    """configs/reference-20ep.yaml differs from the 26-epoch file in its epochs and its peak
    (still 20% of the steps), and the candidate B in the levers its header names."""
    from conftest import ROOT
    from ffcv_resnet.config import as_dict, flatten
    from ffcv_resnet.training.recipe import lr_factor
    from ffcv_resnet.finished.settings import parse_config

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
    # every lever is pinned in the three files, so no later default changes them (the
    # reproduce plan runs the 20-epoch ones as changes to the default)
    import yaml
    levers = {"training.ema", "training.bn_bias_lr_scale", "training.lr_start", "training.decay",
              "training.label_smoothing", "training.tta", "augment.flip", "augment.cutout",
              "augment.order", "model.init"}
    for name in ("reference-26ep.yaml", "reference-20ep.yaml", "candidate-20ep.yaml"):
        text = yaml.safe_load((ROOT / "configs" / name).read_text())
        assert levers <= set(flatten(text)), (name, levers - set(flatten(text)))
