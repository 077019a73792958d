"""Faithfulness scores against the grad-cam package (noise 0), the imputer against the exact
sparse solve, deletion and insertion by hand, seeds and batching, and the imputer's syncs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import random_bn_model

import ffcv_resnet
from ffcv_resnet.errors import UserError
from ffcv_resnet.explain.faithfulness import (linear_impute, PERCENTILES, relevance_ranks,
                                              road_known)


def score(model, images, maps, classes, before=None, **settings):
    """The public faithfulness() with its settings as keywords."""
    return ffcv_resnet.faithfulness(model, images, maps, classes,
                                    ffcv_resnet.ScoreSettings(**settings), before)


@pytest.fixture(scope="module")
def setup():
    """A model, images, classes and untied maps (smooth random maps plus a tiny ramp)."""
    model = random_bn_model()
    g = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 32, 32, generator=g)
    maps = F.interpolate(torch.rand(6, 1, 8, 8, generator=g), size=(32, 32), mode="bilinear",
                         align_corners=False)[:, 0]
    maps = maps + torch.arange(1024.0).view(32, 32) * 1e-5  # no two pixels alike, nor 1 - them
    maps = (maps - maps.amin((1, 2), keepdim=True)) / (maps.amax((1, 2), keepdim=True)
                                                       - maps.amin((1, 2), keepdim=True))
    with torch.no_grad():
        classes = model(images).argmax(1)
    return model, images, maps, classes


@pytest.fixture
def no_noise(monkeypatch):
    """The package's imputer with noise 0 (its constructor's default is 0.01)."""
    from pytorch_grad_cam.metrics import road
    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__",
                        (0.0, road.neighbors_weights))


def _targets(classes):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    return [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]


def _package(name, percentile=None):
    from pytorch_grad_cam.metrics import cam_mult_image, road
    return {"cam_mult": lambda: cam_mult_image.CamMultImageConfidenceChange(),
            "road_morf": lambda: road.ROADMostRelevantFirst(percentile),
            "road_lerf": lambda: road.ROADLeastRelevantFirst(percentile),
            "road_combined": lambda: road.ROADCombined(list(PERCENTILES))}[name]()


class RegionModel(nn.Module):
    """Two classes; logit 0 is 8 x the mean of the top half's red channel, logit 1 is 0."""

    def forward(self, x):
        s = 8 * x[:, 0, :16].mean((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


@pytest.mark.parametrize("metric,percentile", [
    ("cam_mult", None), ("road_morf", 80), ("road_morf", 30), ("road_lerf", 20),
    ("road_lerf", 70), ("road_combined", None)])
def test_scores_agree_with_the_package(metric, percentile, setup, no_noise):
    model, images, maps, classes = setup
    ours = score(model, images, maps, classes, metric=metric,
                                    percentile=percentile, noise=0)
    ref = _package(metric, percentile)(images, maps.numpy(), _targets(classes), model)
    assert ours.shape == (6,) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), np.asarray(ref).reshape(-1), atol=1e-3)
    if metric != "road_combined":
        assert np.abs(np.asarray(ref)).max() > 1e-3  # the scores are not trivially zero


def test_batched_imputation_matches_the_exact_sparse_solve(setup):
    """Conjugate gradients on every image at once vs the package's scipy spsolve, image by
    image, for the masks of every percentile both ways: the largest difference is ~1e-5."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    _, images, maps, _ = setup
    ranks = relevance_ranks(maps)
    worst = 0.0
    for p in PERCENTILES:
        for morf in (True, False):
            known = road_known(ranks, p, morf, (32, 32))
            ours = linear_impute(images, known)
            exact = torch.stack([NoisyLinearImputer(noise=0)(images[i], known[i, 0].float())
                                 for i in range(len(images))])
            assert torch.equal(ours[known.expand_as(ours)], images[known.expand_as(images)])
            worst = max(worst, (ours - exact).abs().max().item())
    assert worst < 1e-4, worst


def test_the_kept_pixels_are_what_the_package_threshold_keeps(setup):
    _, _, maps, _ = setup
    ranks = relevance_ranks(maps)
    for p in (10, 35, 80):
        for i in range(len(maps)):
            m = maps[i].numpy()
            morf = road_known(ranks, p, True, (32, 32))[i, 0].numpy()
            lerf = road_known(ranks, p, False, (32, 32))[i, 0].numpy()
            assert np.array_equal(morf, m < np.percentile(m, p))
            assert np.array_equal(lerf, (1 - m) < np.percentile(1 - m, p))


def test_tied_maps_still_remove_the_stated_fraction():
    """A flat map (all ties): the package's strict threshold keeps no pixel (a singular
    system); here 103 of 1,024 pixels stay at p = 10, whichever way, and the fill is finite."""
    flat = torch.zeros(2, 32, 32)
    ranks = relevance_ranks(flat)
    for morf in (True, False):
        known = road_known(ranks, 10, morf, (32, 32))
        assert known.sum((1, 2, 3)).tolist() == [103, 103]
        assert torch.isfinite(linear_impute(torch.rand(2, 3, 32, 32), known)).all()


def test_deletion_and_insertion_by_hand():
    """With 2 steps and a map ranking the top half first: deletion's probabilities are p(image),
    p(top half at the mean colour), p(all at the mean colour); the area is their trapezoid."""
    images = torch.ones(1, 3, 32, 32)
    top_first = torch.zeros(1, 32, 32)
    top_first[:, :16] = 1.0 + torch.arange(512.0).view(16, 32) / 1e4  # untied, top half first
    model, cls = RegionModel(), torch.tensor([0])
    p = lambda s: float(torch.sigmoid(torch.tensor(8.0 * s)))  # noqa: E731  (softmax of [8s, 0])
    mean_red = 0.4914  # the data-set mean colour fills deleted pixels
    expected = (p(1.0) / 2 + p(mean_red) + p(mean_red) / 2) / 2
    got = score(model, images, top_first, cls, metric="deletion", steps=2)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    bottom_first = 1 - top_first  # the irrelevant half goes first: the class survives longer
    late = score(model, images, bottom_first, cls, metric="deletion", steps=2)
    assert late.item() == pytest.approx((p(1.0) / 2 + p(1.0) + p(mean_red) / 2) / 2, abs=1e-6)
    # insertion into a blurred copy of a constant image: the blur changes nothing
    ins = score(model, images, top_first, cls, metric="insertion", steps=2)
    assert ins.item() == pytest.approx(p(1.0), abs=1e-6)


def test_seeded_noise_is_deterministic_and_batching_changes_nothing(setup):
    model, images, maps, classes = setup
    run = lambda seed, **k: score(  # noqa: E731
        model, images, maps, classes, metric="road_morf", noise=0.05,
        generator=torch.Generator().manual_seed(seed), **k)
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    whole = score(model, images, maps, classes, metric="road_combined",
                                     noise=0)
    one = torch.cat([score(model, images[i:i + 1], maps[i:i + 1],
                                              classes[i:i + 1], metric="road_combined",
                                              noise=0) for i in range(len(images))])
    torch.testing.assert_close(whole, one, atol=1e-5, rtol=0)
    small = score(model, images, maps, classes, metric="deletion",
                                     batch_size=5)
    torch.testing.assert_close(small, score(
        model, images, maps, classes, metric="deletion"), atol=1e-5, rtol=0)


def test_unknown_metric_is_one_line_listing_the_choices(setup):
    model, images, maps, classes = setup
    with pytest.raises(UserError, match="unknown faithfulness metric 'road' .choose from "
                                        "cam_mult, road_morf, road_lerf, road_combined, "
                                        "deletion, insertion."):
        score(model, images, maps, classes, metric="road")


def test_the_imputer_reads_the_device_once_every_few_iterations(monkeypatch):
    """Each convergence check is a host sync on a GPU: at most two reads (and one nonzero) per
    CG_CHECK_EVERY iterations, not per iteration."""
    from syncs import counting_syncs
    from ffcv_resnet.explain import faithfulness as F
    calls = {"n": 0}
    original = F._neighbour_sum

    def counted(*args):
        calls["n"] += 1
        return original(*args)
    monkeypatch.setattr(F, "_neighbour_sum", counted)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32, generator=g)
    known = torch.rand(6, 1, 32, 32, generator=g) > 0.97  # few known pixels: many iterations
    with counting_syncs(monkeypatch) as seen:
        F.linear_impute(images, known)
    iterations = calls["n"] - 2  # two sums before the loop, one per iteration
    assert F.CG_CHECK_EVERY >= 4 and iterations > 3 * F.CG_CHECK_EVERY  # long enough to tell
    checks = iterations // F.CG_CHECK_EVERY + 1
    assert seen["_local_scalar_dense"] <= 2 * checks and seen["nonzero"] <= checks
