"""An explain pass's outputs on disk: an interrupted or failed pass leaves the previous report
whole and never touches training's files."""
from __future__ import annotations

import json
import shutil

import pytest


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
