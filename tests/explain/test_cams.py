"""The CAM family against the grad-cam package, one backward per class set, batching, flat maps
and bad method names."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import minmax, random_bn_model

import ffcv_resnet
from ffcv_resnet.errors import UserError
from ffcv_resnet.explain.activations import feature_maps
from ffcv_resnet.explain.cams import eigencam, upsample_and_scale
from ffcv_resnet.explain.options import DEFAULT_METHODS, METHODS
from ffcv_resnet.finished.checkpoint import load_checkpoint
from ffcv_resnet.model import resnet18


PACKAGE = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
           "hirescam": "HiResCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM",
           "scorecam": "ScoreCAM"}


def all_cams(model, images, classes, **settings):
    """The public cams() with its settings as keywords."""
    return ffcv_resnet.cams(model, images, classes, ffcv_resnet.CamSettings(**settings))


@pytest.fixture(scope="module")
def models(trained_run):
    trained, _ = load_checkpoint(trained_run / "model.pt")
    return {"random-bn": random_bn_model(), "trained": trained}


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.fixture(scope="module")
def batches(models, batch, learnable_data):
    """Random images and classes for the random model; for the trained one, test images of
    its task and the classes it predicts (random noise gives it mostly flat maps)."""
    from ffcv_resnet.data.betons import beton_path
    from ffcv_resnet.data.loaders import load_all
    images, _ = load_all(beton_path(learnable_data, "test"), torch.device("cpu"),
                         indices=list(range(0, 60, 7)))
    images = images[:8].float() / 255
    with torch.no_grad():
        predicted = models["trained"](images).argmax(1)
    return {"random-bn": batch, "trained": (images, predicted)}


def _package_maps(model, layer, method, images, classes):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cls = getattr(pytorch_grad_cam, PACKAGE[method])
    with cls(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        if method == "scorecam":
            cam.batch_size = 64
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    model.zero_grad(set_to_none=True)
    return maps


@pytest.mark.parametrize("which", ["random-bn", "trained"])
@pytest.mark.parametrize("layer", ["layer3", "layer4"])
@pytest.mark.parametrize("method", METHODS)
def test_each_method_agrees_with_the_package(method, layer, which, models, batches):
    model = models[which]
    images, classes = batches[which]
    if method == "scorecam":  # C forwards per image: two images are enough
        images, classes = images[:2], classes[:2]
    ours = all_cams(model, images, classes, methods=(method,), layer=layer)[method]
    ref = _package_maps(model, layer, method, images, classes)
    assert ours.maps.shape == images.shape[:1] + images.shape[2:]
    assert 0 <= ours.maps.min() and ours.maps.max() <= 1
    full = ~ours.empty.numpy()
    assert full.sum() >= len(images) // 2  # enough non-flat maps to mean something
    mine, theirs = minmax(ours.maps.numpy()), minmax(ref)
    if method == "eigencam":  # an SVD's sign is arbitrary: compare with either sign
        acts, _, _ = feature_maps(model, dict(model.named_modules())[layer], images,
                                  classes[None], need_grads=False)
        other, _ = upsample_and_scale(-eigencam(acts), images.shape[-2:])
        same = np.abs(mine - theirs).max((1, 2)) <= 1e-3
        flipped = np.abs(minmax(other.numpy()) - theirs).max((1, 2)) <= 1e-3
        assert np.all(same | flipped), np.abs(mine - theirs).max((1, 2))
        return
    np.testing.assert_allclose(mine[full], theirs[full], atol=1e-3)
    assert np.all(ref[~full] == 0)  # flagged maps are the ones the package finds empty too


def test_eigencam_sign_makes_the_largest_magnitude_positive(models, batch):
    model = models["trained"]
    acts, _, _ = feature_maps(model, model.layer3, batch[0], batch[1][None], need_grads=False)
    proj = eigencam(acts)
    assert torch.all(proj.amax((1, 2)).abs() >= proj.amin((1, 2)).abs())
    assert torch.equal(eigencam(-acts * 1.0), eigencam(-acts))  # deterministic


def test_five_gradient_methods_cost_one_backward_per_class_set(models, batch, monkeypatch):
    model = models["random-bn"]
    images, classes = batch
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        both = torch.stack([classes, (classes + 1) % 10])
        out = all_cams(model, images, both, methods=DEFAULT_METHODS)
    finally:
        handle.remove()
    assert set(out) == set(DEFAULT_METHODS) and "scorecam" not in DEFAULT_METHODS
    assert len(calls) == 2 and len(forwards) == 1  # two class sets, one forward
    for m in DEFAULT_METHODS:
        assert out[m].maps.shape == (2, 8, 32, 32) and out[m].empty.shape == (2, 8)
        torch.testing.assert_close(out[m].logits, out["gradcam"].logits)
    alone = all_cams(model, images, classes, methods=("layercam",))["layercam"]
    torch.testing.assert_close(out["layercam"].maps[0], alone.maps, atol=1e-5, rtol=0)


def test_batched_equals_one_image_at_a_time(models, batch):
    model = models["trained"]
    images, classes = batch
    whole = all_cams(model, images, classes, batch_size=3)
    for i in range(len(images)):
        one = all_cams(model, images[i:i + 1], classes[i:i + 1])
        for m in DEFAULT_METHODS:
            torch.testing.assert_close(whole[m].maps[i:i + 1], one[m].maps, atol=1e-5, rtol=0)
            assert torch.equal(whole[m].empty[i:i + 1], one[m].empty)


def test_flat_maps_are_zeros_and_flagged_for_every_gradient_method():
    model = resnet18().eval()
    with torch.no_grad():
        model.fc.weight.zero_()  # every logit is the bias: no gradient reaches the layer
    out = all_cams(model, torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2]))
    for m in ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam"):
        assert out[m].empty.all() and torch.count_nonzero(out[m].maps) == 0, m
    assert not out["eigencam"].empty.any()  # activations alone: unaffected by the gradient


def test_unknown_methods_are_one_line_listing_the_choices(batch):
    with pytest.raises(UserError, match="unknown CAM method 'gradcam2' .choose from gradcam, "
                                        "gradcampp, xgradcam, hirescam, layercam, eigencam, "
                                        "scorecam."):
        all_cams(resnet18(), *batch, methods=("gradcam", "gradcam2"))
