"""Images made 32x32 as torchvision's transforms do, and every mode made RGB."""
from __future__ import annotations

import numpy as np
from PIL import Image


from ffcv_resnet.predict.images import SIZE, to_rgb, to_view


def test_resizing_matches_torchvision_and_modes_become_rgb():
    import torchvision.transforms as T
    reference = T.Compose([T.Resize(SIZE, antialias=True), T.CenterCrop(SIZE)])
    rng = np.random.default_rng(0)
    for w, h in [(640, 480), (33, 100), (20, 25), (32, 32), (1000, 37)]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ours, theirs = np.asarray(to_view(im)), np.asarray(reference(im))
        assert ours.shape == (SIZE, SIZE, 3) and np.array_equal(ours, theirs), (w, h)
    grey = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
    rgb = np.asarray(to_rgb(grey))
    assert np.array_equal(rgb[..., 0], np.asarray(grey)) and (rgb[..., 0] == rgb[..., 2]).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()  # alpha on white
    half = np.asarray(to_rgb(Image.fromarray(np.stack([np.zeros((2, 2)), np.full((2, 2), 128)],
                                                       -1).astype(np.uint8), "LA")))
    assert abs(int(half[0, 0, 0]) - 127) <= 1  # black at half alpha over white
    palette = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).quantize(8)
    assert np.array_equal(np.asarray(to_rgb(palette)), np.asarray(palette.convert("RGB")))
    p_alpha = palette.copy()
    p_alpha.info["transparency"] = int(np.asarray(palette)[0, 0])
    assert (np.asarray(to_rgb(p_alpha))[0, 0] == 255).all()
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))  # 16-bit grey: white
    assert (np.asarray(to_rgb(deep)) == 255).all()
