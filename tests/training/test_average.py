"""Weight averaging held to torch.optim.swa_utils on the same updates, lookahead, and the
average kept exactly in the step's state."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from conftest import CPU

from ffcv_resnet.model import resnet18
from ffcv_resnet.training.average import decay_at, WeightAverage
from ffcv_resnet.training.loop import make_step
from ffcv_resnet.training.recipe import TrainConfig


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def _sgd_steps(model: nn.Module, steps: int, after_step) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        after_step()


@pytest.mark.parametrize("every", [1, 5])
def test_the_average_equals_swa_utils_averaged_model_on_the_same_updates(every):
    total = 23
    model = _net()
    ours = WeightAverage(model, total, every=every, rate=0.9)
    state = {"step": 0}

    def ema(averaged, current, n):  # swa_utils' own EMA at airbench94's decay of this update
        get_ema_multi_avg_fn(decay_at(state["step"], total, 0.9, every))(averaged, current, n)

    reference = AveragedModel(model, multi_avg_fn=ema, use_buffers=True)
    reference.update_parameters(model)  # its first update copies: the average starts at step 0
    live_at_end = {}

    def after():
        state["step"] += 1
        if state["step"] == total:  # ours then writes the average into the model: look first
            live_at_end.update({k: v.clone() for k, v in model.state_dict().items()})
        if state["step"] % every == 0:
            reference.update_parameters(model)
        ours.step()

    _sgd_steps(model, total, after)
    expected = {k: v for k, v in reference.module.state_dict().items() if v.is_floating_point()}
    got = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert expected.keys() == got.keys() and any("running_var" in k for k in got)
    for k in got:  # after the last step the model holds the average: swa_utils' to 1e-6
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    assert any(not torch.allclose(got[k], live_at_end[k]) for k in got)  # and not the last step


def test_lookahead_writes_the_average_back_and_evaluation_sees_the_average():
    model = _net()
    avg = WeightAverage(model, 100, every=3, rate=0.5, lookahead=True)
    seen = []

    def after():
        avg.step()
        if avg.steps % 3 == 0:  # right after an update the weights are the average
            seen.append(all(torch.equal(a, t) for a, t in zip(avg.average, avg.live)))
    _sgd_steps(model, 7, after)
    assert seen == [True, True]
    live = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(a, t) for a, t in zip(avg.average, avg.live))  # step 7 moved on
    with avg.swapped_in():
        assert all(torch.equal(a, t) for a, t in zip(avg.average, avg.live))
    assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())  # put back


def test_the_step_keeps_the_average_in_its_state_and_restores_it_exactly():
    cfg = TrainConfig(batch_size=8, epochs=2, ema="ema", ema_every=2, precision="fp32",
                      compile="off", channels_last=False)
    model = resnet18()
    step = make_step(model, model, cfg, CPU, steps_per_epoch=3)
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    for _ in range(3):
        step(*batch)
    saved = copy.deepcopy(step.state_dict())  # as last.pt holds it (not sharing tensors)
    assert saved["average"]["steps"] == 3
    twin_model = resnet18()
    twin_model.load_state_dict(model.state_dict())
    twin = make_step(twin_model, twin_model, cfg, CPU, steps_per_epoch=3)
    twin.load_state_dict(saved)
    for _ in range(3):  # to the end: both models then hold their averages
        step(*batch)
        twin(*batch)
    a, b = model.state_dict(), twin_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(step.average.average, twin.average.average))
