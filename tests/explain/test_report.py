"""report.html in headless Chromium: what it shows and links, its screenshot, hostile names and
no errors, and the screenshot modes without a browser."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest

from conftest import BROWSER_MISSING, needs_browser, Page, run_script



@pytest.fixture(scope="module")
def explained(trained_run, learnable_data, tmp_path_factory):
    """A copy of the trained run, explained with small gallery pages and a screenshot."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    args = ["--run.dir", run_dir, "--data.dir", learnable_data, "--explain.page_size", "4",
            "--explain.scored", "4",
            "--explain.screenshot", "on" if BROWSER_MISSING is None else "off"]
    r = run_script("scripts/explain.py", *args, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    errors = json.loads((run_dir / "errors.json").read_text())["errors"]
    assert errors, "the toy run should make some mistakes for the report to show"
    return run_dir, errors, r.stdout


def _hostile_report(tmp_path, n_errors: int):
    """A report written directly, with class names full of HTML and script syntax."""
    from ffcv_resnet.png import array_png_bytes
    from ffcv_resnet.explain.gallery import Explained, confusion_from_errors, write_gallery
    from ffcv_resnet.explain.report import ReportContext, write_report
    classes = [f'</script><b>c{k}</b>&amp;"\'' for k in range(10)]
    from benchmarks.render_timing import settings, synthetic
    e = synthetic(n_errors, methods=("gradcam", "layercam"), metrics=("deletion",)) \
        if n_errors else Explained.none(("gradcam", "layercam"), ("deletion",))
    write_gallery(e, classes, tmp_path / "gallery", 4, progress=False, run_id="r<&>")
    (tmp_path / "curves.png").write_bytes(array_png_bytes(np.zeros((4, 4, 3), np.uint8)))
    ctx = ReportContext("r<&>", classes, confusion_from_errors(e, [10] * 10),
                        {"test_accuracy": 0.9, "test_images": 100,
                         "per_class_accuracy": {c: 0.9 for c in classes}},
                        [{"epoch": 1, "lr": 0.1}], {"note": "</script>"}, settings(e, classes), 4,
                        [])
    return write_report(tmp_path, e, ctx), classes, e


def test_the_browser_tests_run_wherever_chromium_is_installed():
    """The browser tests skip only on a machine without chromium; where the set-up installed it
    (as it does as root: CI), anything else missing (Playwright, a chromium that does not run)
    is a failure, not a row of skips."""
    if shutil.which("chromium") is None:
        pytest.skip("no chromium on PATH: the browser tests skip here, as the set-up said")
    assert BROWSER_MISSING is None, f"chromium is installed, yet the browser tests would skip: {BROWSER_MISSING}"


@needs_browser
@pytest.mark.timeout(300)
def test_report_in_chromium(explained):
    from ffcv_resnet.explain.browser import chromium_page
    run_dir, errors, _ = explained
    with chromium_page() as p:
        page = Page(p, run_dir / "report.html")
        assert page.text("#error-count") == str(len(errors))
        assert page.text("#shown-count") == str(len(errors))
        assert sorted(r["index"] for r in page.visible_rows()) == sorted(e["index"] for e in errors)
        sizes = page.images_loaded()
        assert any(u.endswith("curves.png") for u in sizes)
        sheets = [u for u in sizes if "/gallery/sprite-" in u]
        assert len(sheets) == -(-len(errors) // 128)
        assert all(w > 0 and h > 0 for w, h in sizes.values()), sizes
        assert sizes[sheets[0]] == [96, 32 * min(len(errors), 128)]  # 3 panels per error row

        (t, p_), count = Counter((e["true"], e["predicted"]) for e in errors).most_common(1)[0]
        p.click(f'#confusion-matrix td.err[data-true="{t}"][data-pred="{p_}"]')
        rows = page.visible_rows()
        assert sorted(r["index"] for r in rows) == sorted(
            e["index"] for e in errors if (e["true"], e["predicted"]) == (t, p_))
        assert page.text("#shown-count") == str(count) and len(rows) == count

        p.click("#show-all")
        cls = Counter(e["true"] for e in errors).most_common(1)[0][0]
        p.select_option("#filter-true", str(cls))
        assert sorted(r["index"] for r in page.visible_rows()) == sorted(
            e["index"] for e in errors if e["true"] == cls)
        p.select_option("#filter-true", "")
        cls = Counter(e["predicted"] for e in errors).most_common(1)[0][0]
        p.select_option("#filter-pred", str(cls))
        assert sorted(r["index"] for r in page.visible_rows()) == sorted(
            e["index"] for e in errors if e["predicted"] == cls)

        p.click("#show-all")
        for order, key, reverse in (("p_pred:1", "p_pred", False), ("p_true:-1", "p_true", True),
                                    ("p_pred:-1", "p_pred", True)):
            p.select_option("#sort", order)
            values = [r[key] for r in page.visible_rows()]
            assert len(values) == len(errors) and values == sorted(values, reverse=reverse)

        # the method switch: every tile takes that method's sprite sheet and flat flags
        data = page.page.evaluate("() => D")
        assert page.text("#method") and data["methods"][0] == "gradcam"
        for method in data["methods"]:
            p.select_option("#method", method)
            urls = page.page.evaluate("""() => [...document.querySelectorAll('#error-rows tr')]
                .map((tr) => [...tr.querySelectorAll('.tile')].map(
                  (t) => getComputedStyle(t).backgroundImage))""")
            assert all(f"sprite-{method}-" in u for row in urls for u in row)
            flats = page.page.evaluate("""() => [...document.querySelectorAll('#error-rows tr')]
                .map((tr) => [...tr.querySelectorAll('.tile')].slice(1).map(
                  (t) => t.classList.contains('flat')))""")
            by_index = {e["index"]: e for e in data["errors"]}
            shown = [r["index"] for r in page.page.evaluate("""() => [...document.querySelectorAll(
                '#error-rows tr')].map((tr) => ({index: +tr.dataset.index}))""")]
            assert flats == [by_index[i]["flat"][method] for i in shown]
            assert page.text("th .method-name") == method
        sizes = page.images_loaded()
        assert all(w > 0 and h > 0 for w, h in sizes.values()), sizes

        # the faithfulness table: one row per method, each cell the mean explain.json holds
        ex = json.loads((run_dir / "explain.json").read_text())
        for which in ("pred", "true"):
            p.select_option("#faith-which", which)
            cells = page.page.evaluate("""() => [...document.querySelectorAll('#faith-table tr')]
                .slice(1).map((tr) => [...tr.cells].map((td) => td.textContent))""")
            assert [c[0] for c in cells] == ex["methods"]
            for row in cells:
                for metric, text in zip(ex["metrics"], row[1:]):
                    cell = ex["faithfulness"]["metrics"][metric][which][row[0]]
                    assert text.startswith(f"{cell['mean']:.3f}") and f"(n={cell['n']})" in text
        # the last choice shown is "true": a cell is marked only where a paired test names
        # its method clearly best on the true-class maps
        best = page.page.evaluate("""() => [...document.querySelectorAll('#faith-table tr')]
            .slice(1).flatMap((tr) => [...tr.cells].slice(1).flatMap((td, k) =>
              td.classList.contains('best') ? `${tr.cells[0].textContent} ${k}` : []))""")
        f = ex["faithfulness"]
        assert sorted(best) == sorted(f"{m} {k}" for k, metric in enumerate(ex["metrics"])
                                      for m in [f["best_true"][metric]] if m)
        verdict = ex["faithfulness"]["verdict"]
        assert verdict[1:] in page.text("#faith-verdict") and verdict
        p.select_option("#faith-metric", ex["metrics"][-1])
        rows = page.page.evaluate("""() => document.querySelectorAll('#faith-class tr').length""")
        assert rows == 1 + len(data["classes"])
        assert page.problems == []


@needs_browser
def test_screenshot_is_written_with_the_run_id(explained):
    from PIL import Image
    from ffcv_resnet.png import png_run_id
    run_dir, _, stdout = explained
    assert "screenshot: " in stdout and "report.png" in stdout
    with Image.open(run_dir / "report.png") as im:
        assert im.width == 1400 and 600 < im.height <= 2600
    run_id = json.loads((run_dir / "metrics.json").read_text())["run_id"]
    assert png_run_id(run_dir / "report.png") == run_id


def test_the_report_carries_the_run_and_its_errors(explained):
    from ffcv_resnet.png import png_run_id
    run_dir, errors, _ = explained
    run_id = json.loads((run_dir / "metrics.json").read_text())["run_id"]
    page = (run_dir / "report.html").read_text()
    assert f'<meta name="run-id" content="{run_id}">' in page
    data = json.loads(page.split('id="report-data">', 1)[1].split("</script>", 1)[0])
    assert data["run_id"] == run_id and len(data["errors"]) == len(errors)
    assert {e["index"] for e in data["errors"]} == {e["index"] for e in errors}
    assert list(data["sprites"]) == data["methods"]  # a set of sheets per method
    for sheets in data["sprites"].values():
        for sprite in sheets:
            assert png_run_id(run_dir / sprite) == run_id


def test_script_json_cannot_break_out():
    from ffcv_resnet.pages import script_json
    text = script_json({"a": "</script><!--", "b": "&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!--", "b": "&"}


@needs_browser
@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_errors", [0, 7])
def test_hostile_class_names_and_no_errors(tmp_path, n_errors):
    from ffcv_resnet.explain.browser import chromium_page
    path, classes, e = _hostile_report(tmp_path, n_errors)
    with chromium_page() as p:
        page = Page(p, path)
        assert page.text("#error-count") == str(n_errors)
        assert len(page.visible_rows()) == n_errors
        assert p.evaluate("() => [...document.querySelectorAll('#filter-true option')]"
                          ".slice(1).map((o) => o.textContent)") == classes
        assert p.evaluate("() => document.querySelectorAll('#per-class b').length") == 0
        flat = int(e.empty[0].sum())  # the first method's flat maps, one badge each
        assert p.evaluate("() => document.querySelectorAll('.badge').length") == flat
        assert n_errors == 0 or flat > 0
        p.select_option("#method", "layercam")
        assert p.evaluate("() => document.querySelectorAll('.badge').length") == \
            int(e.empty[1].sum())
        assert page.text("#run-id") == "r<&>"
        assert page.problems == []


def test_screenshot_modes_without_a_browser(monkeypatch, tmp_path):
    from ffcv_resnet.explain import browser
    from ffcv_resnet.errors import UserError
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    assert "no chromium" in browser.screenshot_skipped("auto")
    assert browser.screenshot_skipped("off") == "--explain.screenshot off"
    with pytest.raises(UserError, match="--explain.screenshot on: .*no chromium"):
        browser.screenshot_skipped("on")
    stale = tmp_path / "report.png"
    stale.write_bytes(b"an older screenshot")
    line = browser.screenshot_report(tmp_path / "report.html", stale, "r", "auto",
                                     browser.screenshot_skipped("auto"))
    assert line.startswith("screenshot: none (no chromium") and not stale.exists()


def test_screenshot_on_without_a_browser_is_refused_before_any_work(monkeypatch, tmp_path):
    """The run is not even read: an empty folder would otherwise fail as 'no run here'."""
    from ffcv_resnet.explain import browser
    from ffcv_resnet.explain.explain import ExplainSettings, explain_run
    from ffcv_resnet.config import parse
    from ffcv_resnet.errors import UserError
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    (tmp_path / "run").mkdir()
    cfg = parse(ExplainSettings, ["--run.dir", str(tmp_path / "run"), "--data.dir",
                                  str(tmp_path / "nowhere"), "--explain.screenshot", "on"])
    with pytest.raises(UserError, match="^--explain.screenshot on: .*no chromium"):
        explain_run(cfg)


@needs_browser
@pytest.mark.timeout(300)
def test_the_suspect_labels_page_in_chromium(explained):
    """The lowest-AUM training images, each image and its two maps from the page's one sheet,
    the filters working, the CSV of every training image beside it, linked from the report."""
    import numpy as np
    from ffcv_resnet.explain.browser import chromium_page
    run_dir, _, stdout = explained
    d = np.load(run_dir / "train_dynamics.npz")
    assert "suspect labels: the lowest AUM of the 160 training images the run saw" in stdout
    csv_rows = (run_dir / "suspect_labels.csv").read_text().splitlines()
    assert len(csv_rows) == 161 and csv_rows[0].startswith("index,label,aum")
    assert int(csv_rows[1].split(",")[0]) == int(np.argmin(d["aum"]))  # lowest AUM first
    with chromium_page() as p:
        page = Page(p, run_dir / "suspect_labels.html")
        rows = p.evaluate("""() => [...document.querySelectorAll('#rows tr')].filter(
            (tr) => !tr.hidden).map((tr) => [+tr.dataset.index, +tr.dataset.given,
                                             +tr.dataset.top])""")
        assert len(rows) == 160 and [r[0] for r in rows] == np.argsort(d["aum"], kind="stable"
                                                                      ).tolist()
        assert all(given == int(d["label"][i]) for i, given, _ in rows)
        p.check("#only-disagree")
        shown = int(page.text("#shown-count"))
        assert shown == sum(top != given for _, given, top in rows) and shown < 160
        sizes = p.evaluate("""async () => { const img = new Image();
            img.src = getComputedStyle(document.querySelector('.tile')).backgroundImage
              .slice(5, -2); await img.decode(); return [img.naturalWidth, img.naturalHeight]; }""")
        assert sizes == [96, 32 * 160]
        assert page.problems == []
        report = Page(p, run_dir / "report.html")
        links = p.evaluate("() => [...document.querySelectorAll('#file-links a')]"
                           ".map((a) => a.getAttribute('href'))")
        assert "suspect_labels.html" in links and "suspect_labels.csv" in links
        assert report.problems == []


@needs_browser
@pytest.mark.timeout(300)
def test_the_label_column_and_filter_in_chromium(trained_run, learnable_data, tmp_path,
                                                 monkeypatch):
    """With people's votes and the audit cached beside the betons (files in their published
    formats, made for this data): each error's marks, the counts, and the 'label suspect'
    filter showing exactly the errors whose label is in doubt."""
    import dataclasses
    import hashlib
    import io as _io
    import numpy as np
    from ffcv_resnet.config import parse
    from ffcv_resnet.explain import explain as E
    from ffcv_resnet.explain import labels as L
    from ffcv_resnet.explain.browser import chromium_page
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(learnable_data, data)
    errors = json.loads((run / "errors.json").read_text())["errors"]
    t = np.load(run / "test_probs.npz")
    counts = np.zeros((60, 10), np.int64)
    counts[np.arange(60), t["label"]] = 30
    chose_model = [e for e in errors[:4]]
    for e in chose_model:  # most people side with the model on these
        counts[e["index"], e["predicted"]] = 40
    audit = [{"id": errors[-1]["index"], "mturk": {"given": 2, "guessed": 3, "neither": 0,
                                                    "both": 0}}]
    (data / L.HUMAN_DIR).mkdir()
    buf = _io.BytesIO()
    np.save(buf, counts)
    (data / L.HUMAN_DIR / L.COUNTS.name).write_bytes(buf.getvalue())
    (data / L.HUMAN_DIR / L.AUDIT.name).write_text(json.dumps(audit))
    sha = {f.name: hashlib.sha256((data / L.HUMAN_DIR / f.name).read_bytes()).hexdigest()
           for f in L.FILES}
    monkeypatch.setattr(L, "FILES", tuple(dataclasses.replace(f, sha256=sha[f.name])
                                          for f in L.FILES))
    E.explain_run(parse(E.ExplainSettings, ["--run.dir", str(run), "--data.dir", str(data),
                                            "--explain.metrics", "", "--explain.suspects", "8",
                                            "--explain.screenshot", "off"]))
    summary = json.loads((run / "explain.json").read_text())["labels"]
    suspect = {e["index"] for e in errors if e.get("label_issue") or e in chose_model
               or e is errors[-1]}
    assert summary["humans_chose_model"] == 4 and summary["audit_wrong"] == 1
    assert summary["suspect"] == len(suspect)
    with chromium_page() as p:
        page = Page(p, run / "report.html")
        assert f"Label suspect: {len(suspect)} of the {len(errors)} errors" in page.text(
            "#labels-note")
        p.select_option("#filter-label", "suspect")
        assert {r["index"] for r in page.visible_rows()} == suspect
        p.select_option("#filter-label", "clean")
        assert not {r["index"] for r in page.visible_rows()} & suspect
        marks = p.evaluate("() => [...document.querySelectorAll('td.label .mark')]"
                           ".map((m) => m.textContent)")
        assert marks.count("audit: label wrong") == 1
        assert marks.count("cleanlab: doubtful") == sum(bool(e.get("label_issue"))
                                                         for e in errors)
        assert len(p.query_selector_all("td.label .votes")) == len(errors)
        assert page.problems == []


def test_a_damaged_dynamics_file_is_one_line_and_the_report_is_still_drawn(trained_run,
                                                                            learnable_data,
                                                                            tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "train_dynamics.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    r = run_script("scripts/explain.py", "--run.dir", run, "--data.dir", learnable_data,
                   "--explain.metrics", "", "--explain.screenshot", "off", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [x for x in r.stdout.splitlines() if "suspect-labels" in x]
    assert len(lines) == 1 and lines[0].startswith(f"no suspect-labels page: {run}/"
                                                   "train_dynamics.npz is unreadable")
    assert (run / "report.html").is_file() and not (run / "suspect_labels.html").exists()
