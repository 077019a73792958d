"""Batched augmentation: crops are windows of the reflect-padded image, flips and cutout as drawn."""
from __future__ import annotations

import numpy as np
import torch

from ffcv_resnet.data.cifar import MEAN
from ffcv_resnet.data.augment import AugmentConfig, BatchAugment, apply, crop, draw, to_float

CFG = AugmentConfig(pad=4, flip=True, cutout=8)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    return x.permute(0, 3, 1, 2)  # channels_last uint8, as the loaders give


def test_each_crop_is_the_drawn_window_of_the_reflect_padded_image():
    x = to_float(_batch())
    d = draw(CFG, 16, 32, torch.Generator().manual_seed(1))
    out = crop(x, d.dy, d.dx, 4)
    for i in range(16):
        padded = np.pad(x[i].numpy(), ((0, 0), (4, 4), (4, 4)), mode="reflect")
        dy, dx = int(d.dy[i]), int(d.dx[i])
        np.testing.assert_array_equal(out[i].numpy(), padded[:, dy:dy + 32, dx:dx + 32])
    assert set(d.dy.tolist()) <= set(range(9)) and len(set(d.dy.tolist())) > 1


def test_flips_exactly_where_drawn_and_cutout_is_a_square_of_the_given_size():
    x = to_float(_batch())
    d = draw(CFG, 16, 32, torch.Generator().manual_seed(2))
    d.dy.fill_(4), d.dx.fill_(4)  # identity crop, to see flip and cutout alone
    out = apply(x, d, CFG)
    assert 0 < int(d.flip.sum()) < 16
    fill = torch.tensor(MEAN).view(3, 1, 1)
    for i in range(16):
        expect = x[i].flip(2) if d.flip[i] else x[i].clone()
        cy, cx = int(d.cy[i]), int(d.cx[i])
        assert 0 <= cy <= 24 and 0 <= cx <= 24
        is_fill = (out[i] == fill).all(0)
        assert is_fill[cy:cy + 8, cx:cx + 8].all()
        expect[:, cy:cy + 8, cx:cx + 8] = fill
        torch.testing.assert_close(out[i], expect, rtol=0, atol=0)


def test_same_seed_same_batch_and_output_format():
    x = _batch()
    a, b, c = (BatchAugment(CFG, "cpu", seed=s)(x) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (16, 3, 32, 32)
    assert a.is_contiguous(memory_format=torch.channels_last) and 0 <= a.min() and a.max() <= 1


def test_disabled_augmentation_is_the_identity():
    x = _batch()
    out = BatchAugment(AugmentConfig(pad=0, flip=False, cutout=0), "cpu")(x)
    torch.testing.assert_close(out, x.float() / 255, rtol=0, atol=0)
