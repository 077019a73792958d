"""The explain pass: its probabilities are evaluation's, and a run without errors gives an empty
record."""
from __future__ import annotations

import pytest
import torch


from ffcv_resnet.model import resnet18


@pytest.mark.parametrize("tta", ["none", "flip", "flip_translate"])
def test_explain_probabilities_equal_predict(model_and_batch, tta):
    """The one-pass explain reuses Grad-CAM's logits as TTA's plain view: p(pred) and p(true)
    must still be what evaluation (errors.json) computed."""
    from ffcv_resnet.finished.evaluate import predict
    from ffcv_resnet.explain.analysis import PassConfig, explain_errors
    from ffcv_resnet.records import TestError
    model, images, classes = model_and_batch
    uint8 = (images * 255).round().to(torch.uint8).contiguous(memory_format=torch.channels_last)
    probs = predict(model, uint8, batch_size=5, tta=tta).softmax(1)
    pred = (classes + 1) % 10
    errors = [TestError(100 + i, int(t), int(p), float(probs[i, p]))
              for i, (t, p) in enumerate(zip(classes, pred))]
    e = explain_errors(model, uint8, errors, PassConfig(batch_size=5, metrics=(), tta=tta)).explained
    row = {int(i): k for k, i in enumerate(e.index)}
    for i, err in enumerate(errors):
        k = row[err.index]
        assert e.p_pred[k] == pytest.approx(float(probs[i, err.predicted]), abs=1e-5)
        assert e.p_true[k] == pytest.approx(float(probs[i, err.true]), abs=1e-5)
    assert list(e.p_pred) == sorted(e.p_pred, reverse=True)


def test_a_run_without_errors_explains_to_an_empty_gallery(learnable_data, tmp_path):
    from ffcv_resnet.explain.analysis import PassConfig, explain_errors
    from ffcv_resnet.finished.run import load_error_images
    from ffcv_resnet.explain.gallery import write_gallery, write_manifest
    from ffcv_resnet.data.cifar import CLASSES
    images = load_error_images(learnable_data, [], torch.device("cpu"))
    e = explain_errors(resnet18().eval(), images, [], PassConfig(batch_size=8)).explained
    assert images.shape == (0, 3, 32, 32) and len(e.index) == 0 and e.maps.shape == (6, 2, 0, 32, 32)
    assert write_gallery(e, list(CLASSES), tmp_path / "gallery", 4, progress=False) == []
    write_manifest(e, list(CLASSES), tmp_path / "manifest.csv", 4)
    assert (tmp_path / "manifest.csv").read_text().count("\n") == 1  # the header alone
