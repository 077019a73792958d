"""Batched augmentation: crops are windows of the reflect-padded image, flips and cutout as drawn,
alternating flips per image across epochs and loaders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ffcv_resnet.data.augment import apply, AugmentConfig, BatchAugment, crop, draw, to_float
from ffcv_resnet.data.cifar import MEAN


CFG = AugmentConfig(pad=4, flip=True, cutout=8)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    return x.permute(0, 3, 1, 2)  # channels_last uint8, as the loaders give


ALTERNATE = AugmentConfig(pad=0, flip="alternate", cutout=0)  # flips alone: what is flipped shows


def _flipped(x: torch.Tensor, out: torch.Tensor) -> list[bool]:
    """Per image: the output is its mirror (True) or itself (False); asymmetric images only."""
    plain, mirror = to_float(x), to_float(x).flip(3)
    result = []
    for o, p, m in zip(out, plain, mirror):
        assert torch.equal(o, m) != torch.equal(o, p)
        result.append(torch.equal(o, m))
    return result


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


def test_the_published_order_cuts_out_before_translating_so_the_square_moves_and_mirrors():
    """A constant grey image, cutout at the top-left corner, then the image shifted 4 pixels
    down-right: in flip_cutout_translate the square moves with the image and its reflection
    shows in the padded border; in crop_flip_cutout it stays where it was drawn."""
    import dataclasses
    x = torch.full((1, 3, 32, 32), 0.8).contiguous(memory_format=torch.channels_last)
    cfg = AugmentConfig(pad=4, flip=False, cutout=8, order="crop_flip_cutout")
    d = draw(cfg, 1, 32, torch.Generator().manual_seed(0))
    d.dy.fill_(0), d.dx.fill_(0)  # window at the padded copy's top-left: a shift down-right
    d.cy.fill_(0), d.cx.fill_(0)  # the square at the image's top-left corner
    d.flip.fill_(False)
    fill = torch.tensor(MEAN).view(3, 1, 1)

    def square(img, rows, cols):
        return torch.allclose(img[0, :, rows, cols], fill.expand(3, rows.stop - rows.start,
                                                                 cols.stop - cols.start))
    ours = apply(x, d, cfg)
    assert square(ours, slice(0, 8), slice(0, 8)) and not square(ours, slice(8, 12),
                                                                 slice(8, 12))
    published = apply(x, d, dataclasses.replace(cfg, order="flip_cutout_translate"))
    # the image moved 4 down and 4 right: the square now covers rows/cols 4..11, and the
    # reflect padding mirrors its rows/cols 1..4 into the border 0..3
    assert square(published, slice(4, 12), slice(4, 12))
    assert square(published, slice(0, 4), slice(0, 4))
    assert not torch.allclose(published[0, :, 12:, 12:], fill.expand(3, 20, 20))
    assert not torch.equal(ours, published)
    with torch.no_grad():  # with neither cutout nor a flip the two orders agree
        plain = dataclasses.replace(cfg, cutout=0)
        assert torch.equal(apply(x, d, plain),
                           apply(x, d, dataclasses.replace(plain, order="flip_cutout_translate")))


def test_alternating_flips_flip_each_image_every_other_epoch_whatever_its_batch():
    images = _batch(40, seed=3)
    aug = BatchAugment(ALTERNATE, "cpu", seed=0, images=40, flip_seed=7)
    flips = {}  # (epoch, image) -> flipped
    for epoch in range(4):
        order = torch.randperm(40, generator=torch.Generator().manual_seed(epoch))
        for part in order.split(16):  # batches of another composition every epoch
            for i, f in zip(part.tolist(), _flipped(images[part], aug(images[part], part, epoch))):
                flips[epoch, i] = f
    first = [flips[0, i] for i in range(40)]
    assert 10 < sum(first) < 30  # epoch 0: at random
    for i in range(40):
        assert [flips[e, i] for e in range(4)] == [first[i], not first[i]] * 2
    # a resumed run (a new object, a later epoch) flips the same images; another seed others
    again = BatchAugment(ALTERNATE, "cpu", seed=5, images=40, flip_seed=7)
    idx = torch.arange(40)
    assert _flipped(images, again(images, idx, 3)) == [not f for f in first]
    other = BatchAugment(ALTERNATE, "cpu", seed=0, images=40, flip_seed=8)
    assert _flipped(images, other(images, idx, 0)) != first


def test_flip_option_reads_its_old_boolean_and_its_modes():
    from ffcv_resnet.config import ConfigError, parse
    from ffcv_resnet.finished.settings import TrainSettings

    def flip(*argv):
        return parse(TrainSettings, ["--run.dir", "x", *argv]).augment.flip

    assert flip() == "random"
    assert [flip("--augment.flip", v) for v in ("true", "false", "alternate", "off", "random")] \
        == ["random", "off", "alternate", "off", "random"]
    assert AugmentConfig(flip=False).flip == "off" and AugmentConfig(flip=True).flip == "random"
    with pytest.raises(ConfigError, match="augment.flip"):
        flip("--augment.flip", "sometimes")


@pytest.mark.parametrize("kind", ["ffcv", "resident"])
def test_alternating_flips_alternate_per_image_through_either_loader(kind, sources, tiny,
                                                                     tmp_path):
    from ffcv_resnet.data.betons import beton_path
    from ffcv_resnet.data.convert import prepare
    from ffcv_resnet.data.loaders import Stream, train_batches
    prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
    batches = train_batches(kind, beton_path(tmp_path / "d", "train"), 5, torch.device("cpu"),
                            Stream(order="random", seed=1))
    aug = BatchAugment(ALTERNATE, "cpu", images=30, flip_seed=0)
    where = {bytes(img): i for i, img in enumerate(tiny["train"].images)}
    flips: dict[int, list[bool]] = {}
    for epoch in range(4):
        for x, _, index in batches:
            for img, f in zip(x, _flipped(x, aug(x, index, epoch))):
                flips.setdefault(where[bytes(img.permute(1, 2, 0).contiguous().numpy())],
                                 []).append(f)
    assert len(flips) == 30 and all(len(f) == 4 for f in flips.values())
    assert all(f == [f[0], not f[0]] * 2 for f in flips.values())
    assert 0 < sum(f[0] for f in flips.values()) < 30


def test_alternating_flips_without_the_beton_s_count_or_the_indices_say_what_is_missing():
    """A caller that builds BatchAugment with alternate flips as it would for random ones gets
    a sentence, not an index error deep in a batch."""
    with pytest.raises(ValueError, match=r"image count \(images=...\)"):
        BatchAugment(ALTERNATE, "cpu")
    with pytest.raises(ValueError, match="need each image's beton index"):
        BatchAugment(ALTERNATE, "cpu", images=16)(_batch())
