"""Every training image's dynamics: AUM held to the aum package on the same logits, forgetting
events and the spread of p(label) by hand, the state kept exactly, two processes' epochs summed
as one's, and a wrong label found at the bottom of the ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CPU
from ffcv_resnet.training.dynamics import Dynamics


def _epochs(n=12, classes=4, epochs=5, seed=0):
    """Per epoch: a random order of the images (some left out) and random logits."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    out = []
    for e in range(epochs):
        order = torch.randperm(n, generator=g)[:n - 2 * (e % 3)]  # some sit an epoch out
        out.append([(torch.randn(len(part), classes, generator=g) * 3, labels[part], part)
                    for part in order.split(5)])
    return labels, out


def test_aum_equals_the_aum_package_on_the_same_logits(tmp_path):
    pytest.importorskip("aum")
    from aum import AUMCalculator
    labels, epochs = _epochs()
    d = Dynamics(len(labels), CPU)
    ref = AUMCalculator(str(tmp_path), compressed=True)
    for batches in epochs:
        for logits, y, index in batches:
            d.update(logits, y, index)
            ref.update(logits, y, index.tolist())
        d.end_epoch()
    got = d.arrays()
    for i in range(len(labels)):
        assert got["aum"][i] == pytest.approx(ref.sums[i] / ref.counts[i], abs=1e-5)
        assert got["seen_epochs"][i] == ref.counts[i]
    assert np.array_equal(got["label"], labels.numpy())


def test_forgetting_events_epochs_right_and_the_spread_of_p_by_hand():
    """Image 0: right, wrong, right, wrong (2 events); image 1: wrong, right, right, wrong, with
    an epoch sat out between (1 event: its presentations, not the calendar, count); image 2
    always right (0)."""
    d = Dynamics(3, CPU)
    right, wrong = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]])
    label = torch.tensor([0])
    script = [[(0, right), (1, wrong), (2, right)], [(0, wrong), (1, right), (2, right)],
              [(0, right), (2, right)], [(0, wrong), (1, right), (2, right)],
              [(1, wrong), (2, right)]]
    for epoch in script:
        for i, logits in epoch:
            d.update(logits, label, torch.tensor([i]))
        d.end_epoch()
    a = d.arrays()
    assert a["forgetting_events"].tolist() == [2, 1, 0]
    assert a["right_epochs"].tolist() == [2, 2, 5] and a["seen_epochs"].tolist() == [4, 4, 5]
    p_right, p_wrong = torch.softmax(right, 1)[0, 0].item(), torch.softmax(wrong, 1)[0, 0].item()
    ps = np.array([p_right, p_wrong, p_right, p_wrong])
    assert a["p_mean"][0] == pytest.approx(ps.mean()) and a["p_std"][0] == pytest.approx(ps.std())
    assert a["aum"][2] == pytest.approx(5.0) and a["aum"][0] == pytest.approx(0.0)


def test_two_processes_summed_each_epoch_equal_one_and_the_state_restores_exactly():
    """Two processes, each with its share of every epoch, summed once an epoch (what the
    all-reduce does), hold what one process seeing everything holds."""
    labels, epochs = _epochs(seed=1)
    whole, halves = Dynamics(len(labels), CPU), [Dynamics(len(labels), CPU) for _ in range(2)]
    for batches in epochs:
        for k, (logits, y, index) in enumerate(batches):
            whole.update(logits, y, index)
            halves[k % 2].update(logits, y, index)
        whole.end_epoch()
        summed = halves[0].epoch() + halves[1].epoch()
        for h in halves:
            h.absorb(summed)
    for h in halves:
        for name, value in whole.arrays().items():
            np.testing.assert_allclose(h.arrays()[name], value, rtol=1e-6, equal_nan=True)
    twin = Dynamics(len(labels), CPU)
    twin.load_state_dict(whole.state_dict())
    assert all(np.array_equal(twin.arrays()[k], v, equal_nan=True)
               for k, v in whole.arrays().items())
