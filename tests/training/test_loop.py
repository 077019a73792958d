"""The training step and its warm-up: the model's memory format, static compile shapes, states
restored after warm-up, and no host sync per step."""
from __future__ import annotations

import torch

from conftest import CPU

from ffcv_resnet.model import resnet18
from ffcv_resnet.training.loop import make_step, warm_up
from ffcv_resnet.training.recipe import TrainConfig


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


def test_compile_uses_static_shapes(monkeypatch):
    """Training and evaluation batches differ: each must get a static graph, not a recompiled
    symbolic-batch one (Dynamo's automatic dynamic shapes)."""
    from ffcv_resnet.training.loop import prepare_model
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(kw) or m)
    prepare_model(resnet18(), TrainConfig(compile="on", compile_mode="reduce-overhead"), CPU)
    assert calls == [{"mode": "reduce-overhead", "dynamic": False}]


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


def test_the_training_step_makes_no_host_sync(monkeypatch):
    """Per step nothing waits for the device: the syncs of an epoch of 5 batches are those of
    an epoch of 1 (the epoch's one read of its totals), with every lever on and every training
    image's dynamics recorded."""
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
        step = make_step(model, model, cfg, cpu, steps_per_epoch=5, images=40)
        assert step.dynamics is not None
        augment = BatchAugment(AugmentConfig(flip="alternate", cutout=8), cpu, images=40)
        with counting_syncs(monkeypatch) as seen:
            train_one_epoch(Epochs(step, batches, augment, None, cpu), epoch=1)
        return seen
    one, five = syncs(data[:1]), syncs(data)
    assert five == one, f"per-step syncs: {five - one}"
    assert one["tolist"] == 1  # the epoch's one read
