"""Evaluation of a finished model: outputs a compiled model cannot overwrite, and the test-time
augmentation views written out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch


from ffcv_resnet.finished.evaluate import predict


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
