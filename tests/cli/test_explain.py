"""scripts/explain.py on a trained run: the gallery, manifest, figures and explain.json; bad
input and damaged runs in one line."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_script


pytestmark = pytest.mark.slow  # every test here starts a process


def _explain(run_dir, data_dir, *extra):
    return run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", data_dir,
                      *extra, timeout=180)


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


def test_explain_refuses_a_missing_history_and_a_layer_without_feature_maps(trained_run,
                                                                           learnable_data,
                                                                           tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(trained_run, run_dir)
    r = run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", learnable_data,
                   "--explain.layer", "fc", timeout=120)
    assert r.returncode == 2 and "layer 'fc' gives no feature map" in r.stderr
    assert "Traceback" not in r.stderr
    (run_dir / "history.jsonl").unlink()
    r = run_script("scripts/explain.py", "--run.dir", run_dir, "--data.dir", learnable_data,
                   timeout=120)
    assert r.returncode == 2 and "history.jsonl holds 0 epochs" in r.stderr
