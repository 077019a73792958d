"""scripts/predict.py and the Python API on a trained run: the test images, given as files,
predicted as the run's own evaluation did; resizing and modes against torchvision's transforms;
every bad input named and listed; an unusable run refused before anything is written; the page
in a real browser."""
from __future__ import annotations

import json
import shutil
import zlib
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_script

from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.data.loaders import load_all
from ffcv_resnet.errors import UserError
from ffcv_resnet.predict.images import SIZE, decode, to_rgb, to_view


@pytest.fixture(scope="module")
def test_images(learnable_data, tmp_path_factory):
    """The test split as PNG files named by index, with litter a folder collects."""
    folder = tmp_path_factory.mktemp("images") / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    x, y = load_all(beton_path(learnable_data, "test"), torch.device("cpu"))
    for i, im in enumerate(x.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(folder / ("sub" if i % 2 else ".") / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")  # litter: skipped, not failed
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._000.png").write_bytes(b"\0\5\26\7 AppleDouble")
    (folder / ".git" / "x.png").write_bytes(b"hidden folder")
    return folder, y.numpy()


def predict(run, out, *inputs, extra=()):
    return run_script("scripts/predict.py", "--run.dir", run, "--predict.out", out, *extra,
                      *inputs, timeout=300)


def test_the_test_images_predict_as_the_run_evaluated_them(trained_run, test_images, tmp_path):
    folder, labels = test_images
    out = tmp_path / "out"
    r = predict(trained_run, out, folder, extra=["--predict.top", "10"])
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


def _bomb_png(path, side=20_000):
    """A real decompression bomb: a valid 1-bit PNG of side x side zeros, a few hundred KB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xffffffff)
    row = b"\0" * (1 + side // 8)
    raw = zlib.compress(row * side, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side,
                                                                         1, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_every_bad_input_is_named_and_the_rest_predicted(trained_run, test_images, tmp_path):
    folder, _ = test_images
    bad = tmp_path / "bad"
    bad.mkdir()
    good = folder / "000.png"
    raw = good.read_bytes()
    (bad / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (bad / "fake.jpg").write_text("a text file with an image's name")
    (bad / "notes.txt").write_text("given by name: tried, and not an image")
    _bomb_png(bad / "bomb.png")
    assert (bad / "bomb.png").stat().st_size < 2_000_000
    inputs = [good, bad / "truncated.png", bad / "fake.jpg", bad / "notes.txt", bad / "bomb.png",
              tmp_path / "missing.png", str(tmp_path / "none-*.jpg")]
    out = tmp_path / "out"
    r = predict(trained_run, out, *inputs)
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 7 and lines[-1].startswith("error: 6 of 7 input(s) could not be used")
    why = dict(line[len("failed: "):].split(": ", 1) for line in lines[:-1])
    assert "truncated" in why[str(bad / "truncated.png")]
    assert why[str(bad / "fake.jpg")] == "not an image Pillow can read"
    assert why[str(bad / "notes.txt")] == "not an image Pillow can read"
    assert "decompression bomb" in why[str(bad / "bomb.png")]
    assert why[str(tmp_path / "missing.png")] == "no such file or folder"
    assert why[str(tmp_path / "none-*.jpg")] == "no file matches"
    doc = json.loads((out / "predictions.json").read_text())
    assert [p["path"] for p in doc["predictions"]] == [str(good)]
    assert {f["path"]: f["error"] for f in doc["failed"]} == why
    # nothing usable at all: exit 2, nothing written
    out2 = tmp_path / "out2"
    r = predict(trained_run, out2, bad / "fake.jpg", tmp_path / "missing.png")
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == (
        "error: nothing to predict: 2 input(s) could not be used")
    assert not out2.exists()


def test_an_unusable_run_or_output_folder_is_refused_before_any_work(trained_run, test_images,
                                                                    tmp_path):
    from ffcv_resnet.run_folder import EXPLAIN_FILES
    folder, _ = test_images
    image = folder / "000.png"
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(*EXPLAIN_FILES, "last.pt"))
    out = tmp_path / "out"
    cases = []
    (run / "metrics.json").rename(tmp_path / "metrics.json")
    cases.append((predict(run, out, image), "training did not finish"))
    (tmp_path / "metrics.json").rename(run / "metrics.json")
    blob = torch.load(trained_run / "model.pt", weights_only=True)
    good = dict(blob)
    w = blob["state_dict"]["fc.weight"].clone()
    w[0, 0] = float("inf")
    blob["state_dict"] = {**blob["state_dict"], "fc.weight": w}
    torch.save(blob, run / "model.pt")
    cases.append((predict(run, out, image), "NaN or inf weights (fc.weight"))
    torch.save({**good, "run_id": "another-run"}, run / "model.pt")
    cases.append((predict(run, out, image), "files of different runs"))
    torch.save(good, run / "model.pt")
    cases.append((predict(tmp_path / "nowhere", out, image), "no such run folder"))
    cases.append((predict(run, run / "preds", image), "inside the run folder"))
    litter = tmp_path / "litter"
    litter.mkdir()
    (litter / "thesis.tex").write_text("mine")
    cases.append((predict(run, litter, image), "holds files that are not a prediction's"))
    cases.append((predict(run, out), "no images given"))
    cases.append((predict(run, out, image, extra=["--predict.method", "magic"]),
                  "--predict.method"))
    for r, message in cases:
        assert r.returncode == 2 and message in r.stderr, (message, r.stderr[-1500:])
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert not out.exists() and not (run / "preds").exists()
    assert [p.name for p in litter.iterdir()] == ["thesis.tex"]
    # a second prediction into the same folder replaces the first whole
    assert predict(run, out, folder).returncode == 0
    first = len(list((out / "overlays").iterdir()))
    r = predict(run, out, image, extra=["--predict.method", "none"])
    assert r.returncode == 0, r.stderr
    assert first > 1 and not (out / "overlays").exists()
    assert len(json.loads((out / "predictions.json").read_text())["predictions"]) == 1


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


def test_the_page_in_chromium(trained_run, test_images, tmp_path):
    from ffcv_resnet.explain.browser import browser_missing, chromium_page
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    folder, labels = test_images
    out = tmp_path / "out"
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(folder / "000.png", odd / "<img src=x onerror=alert(1)>&amp;.png")
    (odd / "broken.png").write_bytes(b"\x89PNG broken")
    r = predict(trained_run, out, folder, odd)
    assert r.returncode == 1, r.stderr[-1500:]
    with chromium_page() as page:
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda q: requests.append(q.url))
        page.goto((out / "predictions.html").as_uri(), wait_until="load")
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests)
        rows = page.locator("tr.prediction")
        assert rows.count() == len(labels) + 1
        loaded = page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert loaded and page.locator("img").count() == 3 * rows.count()
        assert page.locator("tr.failed").count() == 1
        assert "broken.png" in page.locator("tr.failed").inner_text()
        assert page.get_by_text("<img src=x onerror=alert(1)>&amp;.png", exact=False).count() == 1
        first = rows.nth(0).inner_text()
        doc = json.loads((out / "predictions.json").read_text())
        assert doc["predictions"][0]["predicted"] in first and "%" in first
        assert page.locator("#run").inner_text() == doc["run_id"]
