"""Grad-CAM against the reference package, batching, restored state; explain.py end to end."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_script
from ffcv_resnet.errors import UserError
from ffcv_resnet import grad_cam  # the package-level API
from ffcv_resnet.model import resnet18


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a - a.min(axis=(1, 2), keepdims=True)
    top = a.max(axis=(1, 2), keepdims=True)
    return np.where(top > 0, a / np.where(top > 0, top, 1), 0)


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = resnet18().eval()
    images = torch.rand(12, 3, 32, 32)
    classes = torch.randint(0, 10, (12,))
    return model, images, classes


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
    np.testing.assert_allclose(_minmax(ours.maps.numpy())[full], _minmax(ref)[full], atol=1e-3)
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


def test_explain_writes_gallery_manifest_and_figures(trained_run, learnable_data):
    errors_json = (trained_run / "errors.json").read_bytes()
    r = run_script("scripts/explain.py", "--run.dir", trained_run, "--data.dir", learnable_data,
                   "--explain.page_size", "4", "--explain.scored", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (trained_run / "errors.json").read_bytes() == errors_json  # training's, untouched
    assert "maps (gradcam, gradcampp, xgradcam, hirescam, layercam, eigencam;" in r.stdout
    assert "scores (road_combined, deletion, insertion)" in r.stdout and "rendering" in r.stdout
    errors = json.loads((trained_run / "errors.json").read_text())["errors"]
    ex = json.loads((trained_run / "explain.json").read_text())
    assert ex["methods"] == ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam",
                             "eigencam"] and ex["metrics"] == ["road_combined", "deletion",
                                                                "insertion"]
    assert ex["scored"] == 5 < len(errors)  # a seeded sample; the others carry no scores
    assert f"scores (road_combined, deletion, insertion): 5 of {len(errors)} errors" in \
        r.stdout and "--explain.scored all" in r.stdout
    assert ex["cams_seconds"] > 0 and ex["scores_seconds"] > 0 and ex["explain_seconds"] == \
        pytest.approx(ex["cams_seconds"] + ex["scores_seconds"])
    with open(trained_run / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    columns = [f"{m}_{k}_{w}" for m in ex["methods"] for k in ex["metrics"]
               for w in ("pred", "true")]
    scored = [r for r in rows if any(r[c] != "" for c in columns)]
    assert len(scored) == 5  # the scores are the manifest's (blank: not scored)
    table = ex["faithfulness"]
    assert table["most_faithful"] in (*ex["methods"], None) and table["verdict"]
    for metric in ex["metrics"]:
        for method in ex["methods"]:
            cell = table["metrics"][metric]["pred"][method]
            finite = [float(r[f"{method}_{metric}_pred"]) for r in scored
                      if r[f"{method}_{metric}_pred"] != ""]
            assert cell["n"] == len(finite)  # the manifest rounds to 6 places
            assert cell["mean"] == pytest.approx(np.mean(finite), abs=1e-6)
            assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
    assert sorted(int(r["index"]) for r in rows) == sorted(e["index"] for e in errors)
    by_index = {e["index"]: e for e in errors}
    assert all(int(r["predicted"]) == by_index[int(r["index"])]["predicted"] for r in rows)
    p = [float(r["p_pred"]) for r in rows]
    assert p == sorted(p, reverse=True)
    pages = sorted((trained_run / "gallery").glob("page-*.png"))
    assert len(pages) == -(-len(errors) // 4)
    assert {int(r["page"]) for r in rows} == set(range(1, len(pages) + 1))
    from PIL import Image
    from ffcv_resnet.png import png_run_id
    from ffcv_resnet.run_folder import read_run_id
    run_id = read_run_id(trained_run)
    for name in ("summary.png", "overview.png", *[f"gallery/{p.name}" for p in pages]):
        with Image.open(trained_run / name) as im:  # a whole image, not just a signature
            im.load()
            assert im.format == "PNG" and min(im.size) >= 100, (name, im.size)
        assert png_run_id(trained_run / name) == run_id, name  # each names its run
    assert set(rows[0]) >= {"index", "true", "predicted", "p_pred", "page"}
    assert ex["errors"] == len(errors) and ex["pages"] == len(pages)
    for key in ("cams_seconds", "scores_seconds", "render_seconds", "explain_seconds",
                "methods", "metrics", "scored", "layer", "precision", "device", "torch"):
        assert key in ex, key
    assert all("scores" not in e for e in errors)


def _explain(run_dir, data_dir, *extra):
    return run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", data_dir,
                      *extra, timeout=180)


def test_explain_bad_inputs(trained_run, learnable_data, tmp_path, sources):
    import shutil
    from ffcv_resnet.data.convert import prepare
    cases = []
    cases.append((_explain(tmp_path / "nope", learnable_data), "no such run folder"))
    cases.append((_explain(trained_run, learnable_data, "--explain.methods", "gradcam,gradcam3"),
                  "bad value 'gradcam3' for --explain.methods (expected a comma-separated list of "
                  "gradcam, gradcampp, xgradcam, hirescam, layercam, eigencam, scorecam, each "
                  "once)"))
    cases.append((_explain(trained_run, learnable_data, "--explain.metrics", "road,deletion"),
                  "bad value 'road' for --explain.metrics"))
    cases.append((_explain(trained_run, learnable_data, "--explain.layer", "avgpool"),
                  "layer 'avgpool' gives a 1x1 feature map"))
    cases.append((_explain(trained_run, learnable_data, "--explain.layer", "layer7"),
                  "no layer 'layer7'"))
    other = tmp_path / "other_data"
    prepare(other, str(sources["batches-folder"]), log=lambda *_: None)
    cases.append((_explain(trained_run, other), "test beton does not match the run"))
    broken = tmp_path / "broken"
    from ffcv_resnet.run_folder import EXPLAIN_FILES
    shutil.copytree(trained_run, broken, ignore=shutil.ignore_patterns(*EXPLAIN_FILES))
    raw = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(raw[: len(raw) // 3])
    cases.append((_explain(broken, learnable_data), "unreadable checkpoint"))
    blob = torch.load(trained_run / "model.pt", weights_only=True)
    blob["arch"] = "vit-tiny"
    torch.save(blob, broken / "model.pt")
    cases.append((_explain(broken, learnable_data), "another architecture"))
    blob = torch.load(trained_run / "model.pt", weights_only=True)
    w = blob["state_dict"]["layer4.0.conv1.weight"].contiguous()
    w.view(torch.int32).view(-1)[:100_000] = -1  # 400 KB of 0xff bytes: NaNs
    blob["state_dict"]["layer4.0.conv1.weight"] = w
    torch.save(blob, broken / "model.pt")
    cases.append((_explain(broken, learnable_data), "NaN or inf weights (layer4.0.conv1.weight"))
    import pickle
    (broken / "model.pt").write_bytes(pickle.dumps({"state_dict": [1, 2, 3]}))  # a raw pickle
    cases.append((_explain(broken, learnable_data), "unreadable checkpoint"))
    (broken / "model.pt").unlink()
    cases.append((_explain(broken, learnable_data), "no checkpoint"))
    for result, message in cases:  # one line each (no warning before it), nothing drawn
        assert result.returncode == 2 and message in result.stderr, result.stderr[-1500:]
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not any((broken / name).exists() for name in ("report.html", "gallery", "manifest.csv",
                                                         "summary.png", "explain.json"))


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


def test_an_edited_errors_file_is_refused(trained_run, learnable_data, tmp_path):
    import json
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    doc = json.loads((trained_run / "errors.json").read_text())
    assert doc["errors"], "the trained run has errors to edit"
    for edit, message in ((lambda d: d["errors"][0].update(predicted=d["errors"][0]["true"]),
                           "not an error of this run's test set"),
                          (lambda d: d["errors"][0].update(predicted=12),
                           "not an error of this run's test set"),
                          (lambda d: d.update(errors=d["errors"][1:]),
                           "an incomplete or edited set of files")):
        edited = json.loads(json.dumps(doc))
        edit(edited)
        (run / "errors.json").write_text(json.dumps(edited))
        r = _explain(run, learnable_data)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_an_interrupted_render_leaves_no_report_of_another_pass(tmp_path, monkeypatch):
    """Every output of an earlier pass goes before anything new is drawn, and what an
    interrupted pass drew goes too: one pass's outputs whole, or none."""
    from benchmarks.render_timing import render, synthetic
    from ffcv_resnet.explain import render as R
    for name in ("report.html", "report.png", "explain.json", "manifest.csv", "summary.png",
                 "overview.png"):
        (tmp_path / name).write_text("from an earlier pass")
    (tmp_path / "gallery").mkdir()
    (tmp_path / "gallery" / "page-001.png").write_text("from an earlier pass")

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "write_gallery", killed)
    with pytest.raises(KeyboardInterrupt):
        render(synthetic(5), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(R, "plot_summary", killed)  # after the gallery and the manifest
    with pytest.raises(KeyboardInterrupt):
        render(synthetic(5), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _explained_with_scores(scores: dict[str, np.ndarray], methods: tuple[str, ...]):
    from ffcv_resnet.explain.gallery import Explained
    n = next(iter(scores.values())).shape[-1]
    i = np.arange(n)
    return Explained(i, i % 10, (i + 1) % 10, np.full(n, .6), np.full(n, .2),
                     np.zeros((n, 32, 32, 3), np.uint8), methods,
                     np.zeros((len(methods), 2, n, 32, 32)),
                     np.zeros((len(methods), 2, n), bool), scores)


def test_no_method_is_named_most_faithful_when_the_intervals_overlap():
    """The report's example: gradcam 0.050 [0.032, 0.068] and xgradcam 0.050 [0.032, 0.067] on
    two errors name no winner; one method ahead on every error of 40 by every score is named."""
    from ffcv_resnet.data.cifar import CLASSES
    from ffcv_resnet.explain.scores import summarise
    methods = ("gradcam", "xgradcam")
    close = np.array([[[0.049, 0.051]] * 2, [[0.0495, 0.0505]] * 2])  # (M, 2, N=2)
    t = summarise(_explained_with_scores({"road_combined": close}, methods), list(CLASSES))
    assert t["most_faithful"] is None and t["best"]["road_combined"] is None
    assert t["verdict"] == "no method is clearly more faithful than the others on 2 scored errors"
    g = np.random.default_rng(0)
    base = g.normal(0.05, 0.02, 40)
    ahead = {"road_combined": np.stack([np.stack([base + 0.03] * 2), np.stack([base] * 2)]),
             "deletion": np.stack([np.stack([base] * 2), np.stack([base + 0.03] * 2)])}
    t = summarise(_explained_with_scores(ahead, methods), list(CLASSES))
    assert t["best"] == {"road_combined": "gradcam", "deletion": "gradcam"}  # lower is better
    assert t["most_faithful"] == "gradcam" and t["verdict"].startswith("gradcam is clearly")
    split = {**ahead, "insertion": ahead["deletion"]}  # insertion: higher is better: xgradcam
    t = summarise(_explained_with_scores(split, methods), list(CLASSES))
    assert t["most_faithful"] is None and t["best"]["insertion"] == "xgradcam"
    assert "each score's clear best, if any, is named beside it" in t["verdict"]


def test_a_failed_rerun_leaves_the_previous_report_and_errors_json_as_they_were(
        trained_run, learnable_data, tmp_path, monkeypatch):
    """A pass that fails while drawing (a full disk, say) keeps the previous pass's outputs
    byte for byte, removes what it drew, and never touches training's files; a pass that ends
    replaces them whole."""
    import errno
    from ffcv_resnet.config import parse
    from ffcv_resnet.explain import explain as E
    from ffcv_resnet.explain import render
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(".lock", "last.pt"))
    args = ["--run.dir", str(run), "--data.dir", str(learnable_data), "--explain.metrics", "",
            "--explain.screenshot", "off", "--explain.overview", "false"]
    other = ["--explain.methods", "gradcam,eigencam"]  # the second pass computes other maps
    E.explain_run(parse(E.ExplainSettings, args))
    outputs = ("report.html", "explain.json", "manifest.csv", "summary.png")
    before = {n: (run / n).read_bytes() for n in (*outputs, "errors.json", "metrics.json")}
    pages = sorted(p.name for p in (run / "gallery").iterdir())

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(render, "write_report", full_disk)
    with pytest.raises(OSError):
        E.explain_run(parse(E.ExplainSettings, [*args, *other]))
    assert {n: (run / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in (run / "gallery").iterdir()) == pages
    assert not [p.name for p in run.iterdir() if p.name.startswith(".explain")]
    monkeypatch.undo()
    E.explain_run(parse(E.ExplainSettings, [*args, *other]))
    assert json.loads((run / "explain.json").read_text())["methods"] == ["gradcam", "eigencam"]
    assert (run / "errors.json").read_bytes() == before["errors.json"]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".explain")]
