"""The finished model on files: the test images predict as the run evaluated them, and the
Python API takes PIL images or a uint8 tensor."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import predict_script

from ffcv_resnet.errors import UserError
from ffcv_resnet.predict.images import decode, SIZE


def test_the_test_images_predict_as_the_run_evaluated_them(trained_run, test_images, tmp_path):
    folder, labels = test_images
    out = tmp_path / "out"
    r = predict_script(trained_run, out, folder, extra=["--predict.top", "10"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == ""
    doc = json.loads((out / "predictions.json").read_text())
    errors = json.loads((trained_run / "errors.json").read_text())
    classes = errors["classes"]
    wrong = {e["index"]: e for e in errors["errors"]}
    assert wrong, "the 3-epoch run should get some test images wrong"
    assert doc["run_id"] == errors["run_id"] and doc["failed"] == []
    rows = doc["predictions"]
    assert len(rows) == len(labels)  # the litter and the hidden files were not taken
    for row in rows:
        i = int(row["path"].rsplit("/", 1)[1][:3])
        if i in wrong:
            assert row["predicted"] == classes[wrong[i]["predicted"]]
            assert row["probability"] == pytest.approx(wrong[i]["confidence"], abs=2e-6)
        else:
            assert row["predicted"] == classes[labels[i]]
        assert [c for c, _ in row["top"]][0] == row["predicted"] and len(row["top"]) == 10
        assert sum(p for _, p in row["top"]) == pytest.approx(1, abs=1e-4)
        with Image.open(out / row["overlay"]) as im:
            assert im.size == (4 * SIZE, 4 * SIZE)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert len(lines) == len(rows) + 1 and lines[0].startswith("path,predicted,probability")


def test_the_python_api_takes_pil_images_or_a_uint8_tensor(trained_run, test_images):
    from ffcv_resnet import load_model, predict_images
    folder, labels = test_images
    model = load_model(trained_run, "cpu")
    assert model.classes == json.loads((trained_run / "errors.json").read_text())["classes"]
    assert not model.module.training
    paths = [folder / "000.png", folder / "sub" / "001.png"]
    pil = [Image.open(p).convert("RGB") for p in paths]
    tensor = torch.from_numpy(np.stack([np.asarray(im) for im in pil])).permute(0, 3, 1, 2)
    a = predict_images(model, pil, top=2)
    b = predict_images(model, tensor.contiguous(), top=2)
    assert [p.top for p in a] == [p.top for p in b] and len(a[0].top) == 2
    assert a[0].cam.shape == (SIZE, SIZE) and 0 <= a[0].cam.min() <= a[0].cam.max() <= 1
    big = [im.resize((96, 96), Image.Resampling.NEAREST) for im in pil]  # 3x: the same view
    assert [p.predicted for p in predict_images(model, big, method=None)] == [
        p.predicted for p in a]
    with pytest.raises(ValueError, match="uint8"):
        predict_images(model, tensor.float())
    with pytest.raises(UserError, match="no such run folder"):
        load_model(folder / "nowhere")
    assert isinstance(decode(str(paths[0])).view, np.ndarray)
