"""scripts/predict.py: every bad input named and the rest predicted, an unusable run refused
before any work, the page in a headless browser."""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib

import pytest
import torch

from conftest import predict_script


pytestmark = pytest.mark.slow  # every test here starts a process


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
    _bomb_png(bad / "warning-bomb.png", side=10_000)  # past Pillow's warning, short of its error
    assert (bad / "bomb.png").stat().st_size < 2_000_000
    os.mkfifo(bad / "fifo.jpg")  # opening it to read would wait for a writer forever
    fifos = tmp_path / "fifos"
    fifos.mkdir()
    os.mkfifo(fifos / "x.png")  # in a folder: found, named, never opened
    inputs = [good, bad / "truncated.png", bad / "fake.jpg", bad / "notes.txt", bad / "bomb.png",
              bad / "warning-bomb.png", bad / "fifo.jpg", fifos, tmp_path / "missing.png",
              str(tmp_path / "none-*.jpg")]
    out = tmp_path / "out"
    r = predict_script(trained_run, out, *inputs)
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.splitlines()  # no Pillow warning among them
    assert len(lines) == 10 and lines[-1].startswith("error: 9 of 10 input(s) could not be used")
    why = dict(line[len("failed: "):].split(": ", 1) for line in lines[:-1])
    assert "decompression bomb" in why[str(bad / "warning-bomb.png")]
    assert why[str(bad / "fifo.jpg")] == "a FIFO, not an image file (never opened)"
    assert why[str(fifos / "x.png")] == "a FIFO, not an image file (never opened)"
    assert r.stdout.splitlines()[0].startswith(f"{good}: ")  # each image's top class
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
    r = predict_script(trained_run, out2, bad / "fake.jpg", tmp_path / "missing.png")
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
    cases.append((predict_script(run, out, image), "training did not finish"))
    (tmp_path / "metrics.json").rename(run / "metrics.json")
    blob = torch.load(trained_run / "model.pt", weights_only=True)
    good = dict(blob)
    w = blob["state_dict"]["fc.weight"].clone()
    w[0, 0] = float("inf")
    blob["state_dict"] = {**blob["state_dict"], "fc.weight": w}
    torch.save(blob, run / "model.pt")
    cases.append((predict_script(run, out, image), "NaN or inf weights (fc.weight"))
    torch.save({**good, "run_id": "another-run"}, run / "model.pt")
    cases.append((predict_script(run, out, image), "files of different runs"))
    torch.save(good, run / "model.pt")
    cases.append((predict_script(tmp_path / "nowhere", out, image), "no such run folder"))
    cases.append((predict_script(run, run / "preds", image), "inside the run folder"))
    litter = tmp_path / "litter"
    litter.mkdir()
    (litter / "thesis.tex").write_text("mine")
    cases.append((predict_script(run, litter, image), "holds files that are not a prediction's"))
    cases.append((predict_script(run, out), "no images given"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    cases.append((predict_script(run, tmp_path / "link", image), "a symbolic link"))
    cases.append((predict_script(run, out, image, extra=["--predict.method", "magic"]),
                  "--predict.method"))
    for r, message in cases:
        assert r.returncode == 2 and message in r.stderr, (message, r.stderr[-1500:])
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert not out.exists() and not (run / "preds").exists()
    assert [p.name for p in litter.iterdir()] == ["thesis.tex"]
    assert (tmp_path / "link").is_symlink() and not list((tmp_path / "elsewhere").iterdir())
    # a second prediction into the same folder replaces the first whole
    assert predict_script(run, out, folder).returncode == 0
    first = len(list((out / "overlays").iterdir()))
    r = predict_script(run, out, image, extra=["--predict.method", "none"])
    assert r.returncode == 0, r.stderr
    assert first > 1 and not (out / "overlays").exists()
    assert len(json.loads((out / "predictions.json").read_text())["predictions"]) == 1


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
    r = predict_script(trained_run, out, folder, odd)
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
