"""Grad-CAM against the reference grad-cam package: batching, two classes from one forward, flat
maps, and the model's mode, hooks and gradients left as they were."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import minmax

from ffcv_resnet import grad_cam
from ffcv_resnet.errors import UserError
from ffcv_resnet.model import resnet18


@pytest.mark.parametrize("layer", ["layer2", "layer3", "layer4"])
def test_maps_agree_with_the_reference_grad_cam_package(model_and_batch, layer):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model, images, classes = model_and_batch
    ours = grad_cam(model, images, classes, layer=layer)
    with GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        ref = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    assert ours.maps.shape == (12, 32, 32) and 0 <= ours.maps.min() and ours.maps.max() <= 1
    full = ~ours.empty.numpy()
    assert full.sum() >= 6  # enough non-flat maps for the comparison to mean something
    np.testing.assert_allclose(minmax(ours.maps.numpy())[full], minmax(ref)[full], atol=1e-3)
    assert np.all(ref[~full] == 0)  # flagged maps are the ones the reference finds empty too
    torch.testing.assert_close(ours.logits, model(images).detach())


def test_batched_equals_one_image_at_a_time(model_and_batch):
    model, images, classes = model_and_batch
    whole = grad_cam(model, images, classes)
    single = [grad_cam(model, images[i:i + 1], classes[i:i + 1]) for i in range(len(images))]
    torch.testing.assert_close(whole.maps, torch.cat([s.maps for s in single]), atol=1e-5,
                               rtol=0)
    assert torch.equal(whole.empty, torch.cat([s.empty for s in single]))
    torch.testing.assert_close(grad_cam(model, images, classes, batch_size=5).maps, whole.maps,
                               atol=1e-5, rtol=0)


def test_two_classes_from_one_forward_equal_one_class_at_a_time(model_and_batch):
    from ffcv_resnet.explain.cams import grad_cams
    model, images, classes = model_and_batch
    other = (classes + 3) % 10
    both = grad_cams(model, images, torch.stack([classes, other]), batch_size=5)
    for k, c in enumerate((classes, other)):  # grad_cam is held to the reference package above
        alone = grad_cam(model, images, c)
        torch.testing.assert_close(both.maps[k], alone.maps, atol=1e-5, rtol=0)
        assert torch.equal(both.empty[k], alone.empty)
    torch.testing.assert_close(both.logits, model(images).detach())


def test_flat_maps_are_zeros_and_flagged():
    model = resnet18().eval()
    with torch.no_grad():
        model.fc.weight.zero_()  # every logit is the bias: no gradient reaches the layer
    res = grad_cam(model, torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2]))
    assert res.empty.all() and torch.count_nonzero(res.maps) == 0
    assert not torch.isnan(res.maps).any()


def test_mode_hooks_and_parameter_gradients_are_left_as_they_were(model_and_batch):
    model, images, classes = model_and_batch
    model.zero_grad(set_to_none=True)  # the reference package's backward() filled them
    model.train()
    model.layer2.eval()  # a mixed state must come back exactly
    hooks_before = {n: len(m._forward_hooks) for n, m in model.named_modules()}
    grad_cam(model, images, classes)
    assert model.training and not model.layer2.training and model.layer3.training
    assert {n: len(m._forward_hooks) for n, m in model.named_modules()} == hooks_before
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(UserError, match="no layer 'layer9'"):
        grad_cam(model, images, classes, layer="layer9")
    with pytest.raises(ValueError, match="one class per image"):
        grad_cam(model, images, classes[:3])

    class Boom(Exception):
        pass

    def explode(*_):
        raise Boom

    handle = model.layer4.register_forward_hook(explode)
    try:
        with pytest.raises(Boom):
            grad_cam(model, images, classes)
    finally:
        handle.remove()
    assert model.training and not model.layer2.training
    assert {n: len(m._forward_hooks) for n, m in model.named_modules()} == hooks_before
    model.eval()
