"""compare.py: every statistic on constructed runs with known differences, worked out by hand;
a real pair of CPU mini-runs through the script; bad input; the page in a headless browser."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TRAIN_ARGS, run_script
from ffcv_resnet.compare.compare import comparison, summary_line
from ffcv_resnet.compare.runs import read_sides
from ffcv_resnet.compare.stats import (bootstrap_ci, group_ci, mcnemar_p, two_by_two, verdict,
                                       welch)
from ffcv_resnet.errors import UserError

CLASSES = ["c0", "c1"]


def fake_run(root: Path, name: str, wrong: dict[int, int], labels: list[int], run_id: str,
             accuracy_only: float | None = None, config: dict | None = None,
             test: dict | None = None) -> Path:
    """A complete run folder as training writes it, with errors at `wrong` ({index: guess})
    over test images of `labels` (2 classes)."""
    path = root / name
    path.mkdir(parents=True)
    n = len(labels)
    counts = [labels.count(0), labels.count(1)]
    test = test or {"count": n, "fingerprint": "f" * 16, "subset": None, "tta": "flip",
                    "class_counts": counts}
    errors = [{"index": i, "true": labels[i], "predicted": p, "confidence": 0.7}
              for i, p in sorted(wrong.items())]
    acc = 1 - len(wrong) / n
    per_class = {c: 1 - sum(1 for i in wrong if labels[i] == k) / counts[k]
                 for k, c in enumerate(CLASSES)}
    cfg = {"run_id": run_id, "training": {"seed": 0, "lr": 0.4}, "run": {"dir": str(path)}}
    for k, v in (config or {}).items():
        sec, opt = k.split(".")
        cfg.setdefault(sec, {})[opt] = v
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "errors.json").write_text(json.dumps({"run_id": run_id, "classes": CLASSES,
                                                  "test": test, "errors": errors}))
    metrics = {"run_id": run_id, "test_accuracy": accuracy_only if accuracy_only else acc,
               "test_loss": 1.0, "per_class_accuracy": per_class, "errors": len(wrong),
               "epochs": 1, "train_seconds": 10.0, "eval_seconds": 1.0, "compile_seconds": 2.0,
               "startup_seconds": 3.0, "checkpoint_seconds": 0.1, "total_seconds": 15.0,
               "images_per_second": 100.0, "train_images": 1000, "test_images": n,
               "peak_lr": 0.4, "device": "cpu", "torch": "2", "seed": 0, "precision": "fp32",
               "compile": "off", "compile_mode": "default", "loader": "ffcv",
               "data_source": "x"}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


LABELS = [0] * 50 + [1] * 50  # 100 test images, two classes


def test_two_by_two_mcnemar_and_the_interval_by_hand(tmp_path):
    # A wrong on 0..11 (12 errors); B wrong on 10..13: B fixed 0..9 (10), broke 12, 13 (2)
    a = fake_run(tmp_path, "a", {i: 1 - LABELS[i] for i in range(12)}, LABELS, "ra")
    b = fake_run(tmp_path, "b", {i: 1 - LABELS[i] for i in range(10, 14)}, LABELS, "rb",
                 config={"training.lr": 0.2})
    (ra,), (rb,) = read_sides([str(a)], [str(b)])
    c = comparison([ra], [rb], seed=0)
    assert c["table"] == {"both_right": 86, "only_a_right": 2, "only_b_right": 10,
                          "both_wrong": 2}
    assert c["fixed"] == list(range(10)) and c["broke"] == [12, 13]
    # exact binomial, two-sided: 2 * P(X <= 2 | n = 12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert c["mcnemar_p"] == pytest.approx(2 * 79 / 4096)
    assert c["difference"] == pytest.approx(0.08)  # 96% - 88%
    lo, hi = c["difference_ci95"]
    # the per-image differences: ten +1, two -1, 88 zeros; sd of the mean by hand
    d = np.array([1] * 10 + [-1] * 2 + [0] * 88)
    se = d.std() / math.sqrt(100)
    assert lo < 0.08 < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert lo > 0 and c["verdict"] == "B is better"
    assert summary_line(c).startswith("B - A = +8.00 points [95% CI +")
    assert "McNemar p = 0.0386 (10 fixed, 2 broke): B is better" in summary_line(c)
    # class 0: A wrong on 0..11, B on 10..13 (all class 0): 10 fixed, 2 broke of 50 -> +16 pts
    assert c["per_class"]["c0"]["difference"] == pytest.approx(0.16)
    assert c["per_class"]["c1"]["difference"] == 0 and c["per_class"]["c1"]["difference_ci95"] == [0, 0]
    # confusion change: B has 8 fewer c0 -> c1 errors, 8 more c0 right
    assert c["confusion_change"] == [[8, -8], [0, 0]]
    assert c["differences"]["options"] == {"training.lr": {"a": [0.4], "b": [0.2]}}
    assert c["differences"]["timings"]["train_seconds"]["difference"] == 0


def test_no_difference_is_said_honestly(tmp_path):
    a = fake_run(tmp_path, "a", {0: 1, 1: 1, 2: 1}, LABELS, "ra")
    b = fake_run(tmp_path, "b", {1: 1, 2: 1, 3: 1}, LABELS, "rb")
    c = comparison(*read_sides([str(a)], [str(b)]), seed=0)
    assert c["difference"] == 0 and c["difference_ci95"][0] < 0 < c["difference_ci95"][1]
    assert c["mcnemar_p"] == 1.0 and c["verdict"].startswith("no difference shown")


def test_groups_welch_and_images_fixed_in_every_seed(tmp_path):
    # A's three seeds all miss 0..9 plus one own image; B's three all get 0..9 right
    a = [fake_run(tmp_path, f"a{k}", {**{i: 1 for i in range(10)}, 20 + k: 1}, LABELS, f"a{k}")
         for k in range(3)]
    b = [fake_run(tmp_path, f"b{k}", {30 + k: 1, 40: 1} if k else {30: 1}, LABELS, f"b{k}")
         for k in range(3)]
    sa, sb = read_sides([str(p) for p in a], [str(p) for p in b])
    c = comparison(sa, sb, seed=0)
    acc_a, acc_b = np.array([0.89] * 3), np.array([0.99, 0.98, 0.98])
    assert c["mode"] == "groups" and c["groups"]["a"]["mean"] == pytest.approx(0.89)
    assert c["groups"]["b"]["sd"] == pytest.approx(np.std(acc_b, ddof=1))
    assert c["difference"] == pytest.approx(acc_b.mean() - acc_a.mean())
    # Welch by hand: t = (mb - ma) / sqrt(vb/nb + va/na), with va = 0
    t = (acc_b.mean() - acc_a.mean()) / math.sqrt(np.var(acc_b, ddof=1) / 3)
    assert c["welch"]["t"] == pytest.approx(t) and c["welch"]["df"] == pytest.approx(2.0)
    assert c["fixed"] == list(range(10)) and c["broke"] == []  # 30, 31, 32, 40: not every seed
    assert c["wrong_fraction"][40] == [0.0, pytest.approx(2 / 3)]
    assert c["wrong_fraction"][0] == [1.0, 0.0] and 50 not in c["wrong_fraction"]
    assert "Welch p = " in summary_line(c) and "10 fixed and 0 broken in every seed" in \
        summary_line(c)


def test_statistics_against_scipy_and_by_hand():
    assert two_by_two([1, 1, 0, 0], [1, 0, 1, 0]) == {"both_right": 1, "only_a_right": 1,
                                                     "only_b_right": 1, "both_wrong": 1}
    assert mcnemar_p(9, 1) == pytest.approx(2 * 11 / 1024)  # 2 * P(X <= 1 | 10)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert bootstrap_ci(np.zeros(10), 0) == [0.0, 0.0]
    assert bootstrap_ci(np.array([1, -1] * 50), 0) == bootstrap_ci(np.array([1, -1] * 50), 0)
    assert group_ci(np.array([0.9]), np.array([0.91, 0.92]), 0) is None
    assert welch(np.array([0.9]), np.array([0.91, 0.92])) is None
    assert verdict(0.01, [0.001, 0.02]) == "B is better"
    assert verdict(-0.01, [-0.02, -0.001]) == "A is better"


@pytest.mark.parametrize("case,message", [
    ("incomplete", "an incomplete run (no metrics.json)"),
    ("not-a-run", "not a run folder (no config.yaml)"),
    ("missing", "no such run folder"),
    ("twice", "the same run on both sides"),
    ("copy", "(a copy): the same run twice"),
    ("other-test", "evaluated on another test set"),
])
def test_bad_sides_are_one_line(case, message, tmp_path):
    a = fake_run(tmp_path, "a", {0: 1}, LABELS, "ra")
    b = fake_run(tmp_path, "b", {1: 1}, LABELS, "rb")
    if case == "incomplete":
        (b / "metrics.json").unlink()
    elif case == "not-a-run":
        b = tmp_path / "photos"
        b.mkdir()
    elif case == "missing":
        b = tmp_path / "nowhere"
    elif case == "twice":
        b = a
    elif case == "copy":
        b = tmp_path / "copy"
        shutil.copytree(a, b)
    else:
        shutil.rmtree(b)
        b = fake_run(tmp_path, "b", {1: 1}, LABELS, "rb", test={
            "count": 100, "fingerprint": "0" * 16, "subset": None, "tta": "flip",
            "class_counts": [50, 50]})
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_sides([str(a)], [str(b)])


@pytest.fixture(scope="module")
def pair(trained_run, learnable_data, tmp_path_factory):
    """Two real CPU mini-runs (seeds 0 and 1 of the toy recipe), both explained."""
    root = tmp_path_factory.mktemp("pair")
    a = root / "a"
    shutil.copytree(trained_run, a, ignore=shutil.ignore_patterns(".lock"))
    b = root / "b"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", b,
                   *TRAIN_ARGS, "--training.seed", "1", "--training.lr", "0.4")
    assert r.returncode == 0, r.stderr[-2000:]
    for run in (a, b):
        r = run_script("scripts/explain.py", "--run.dir", run, "--data.dir", learnable_data,
                       "--explain.metrics", "", "--explain.methods", "gradcam",
                       "--explain.screenshot", "off", "--explain.overview", "false")
        assert r.returncode == 0, r.stderr[-2000:]
    out = root / "cmp"
    r = run_script("scripts/compare.py", "--compare.a", a, "--compare.b", b, "--compare.out",
                   out, "--data.dir", learnable_data)
    assert r.returncode == 0, r.stderr[-2000:]
    return a, b, out, r.stdout


def test_a_real_pair_through_the_script(pair):
    a, b, out, stdout = pair
    c = json.loads((out / "compare.json").read_text())
    assert stdout.splitlines()[0] == c["summary"] and c["summary"].startswith("B - A = ")
    wrong = {s: {e["index"] for e in json.loads((p / "errors.json").read_text())["errors"]}
             for s, p in (("a", a), ("b", b))}
    n = c["test_images"]
    assert c["table"] == {"both_right": n - len(wrong["a"] | wrong["b"]),
                          "only_a_right": len(wrong["b"] - wrong["a"]),
                          "only_b_right": len(wrong["a"] - wrong["b"]),
                          "both_wrong": len(wrong["a"] & wrong["b"])}
    assert c["fixed"] == sorted(wrong["a"] - wrong["b"])
    assert c["broke"] == sorted(wrong["b"] - wrong["a"])
    acc = [json.loads((p / "metrics.json").read_text())["test_accuracy"] for p in (a, b)]
    assert c["difference"] == pytest.approx(acc[1] - acc[0])
    assert set(c["differences"]["options"]) == {"training.seed", "training.lr"}
    assert c["maps"] is True and len(c["shown"]) == len(c["fixed"]) + len(c["broke"])
    for row in c["shown"]:  # the shown probabilities are each model's own guess
        assert (row["kind"] == "fixed") == (row["b_pred"] == row["true"] != row["a_pred"])
    moved = [abs(r["b_p_true"] - r["a_p_true"]) for r in c["shown"] if r["kind"] == "fixed"]
    assert moved == sorted(moved, reverse=True)


@pytest.mark.parametrize("case,message", [
    ("empty-side", "argument --compare.a: expected at least one argument"),
    ("no-side", "--compare.b: no run given"),
    ("same", "the same run on both sides"),
    ("incomplete", "an incomplete run (no metrics.json)"),
    ("not-a-run", "not a run folder"),
    ("out-in-run", "inside the run folder"),
    ("other-data", "test beton does not match the run"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, message, pair, tmp_path,
                                                  learnable_data, sources):
    """Three cases through the script (one stderr line, exit 2), the others in-process."""
    from ffcv_resnet.compare.compare import CompareSettings, compare_runs
    from ffcv_resnet.config import parse
    a, b, _, _ = pair
    args = ["--compare.a", a, "--compare.b", b, "--compare.out", tmp_path / "o",
            "--data.dir", learnable_data]
    if case == "empty-side":
        args = ["--compare.a", "--compare.b", b]
    elif case == "no-side":
        args = ["--compare.a", a, "--compare.out", tmp_path / "o"]
    elif case == "same":
        args[3] = a
    elif case == "incomplete":
        inc = tmp_path / "inc"
        shutil.copytree(b, inc)
        (inc / "metrics.json").unlink()
        args[3] = inc
    elif case == "not-a-run":
        (tmp_path / "photos").mkdir()
        args[3] = tmp_path / "photos"
    elif case == "out-in-run":
        args[5] = a / "cmp"
    else:
        from ffcv_resnet.data.convert import prepare
        prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
        args[7] = tmp_path / "d"
    if case in ("empty-side", "same", "out-in-run"):
        r = run_script("scripts/compare.py", *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    else:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compare_runs(parse(CompareSettings, [str(x) for x in args]), log=lambda *_: None)
    assert not (tmp_path / "o").exists() and not (a / "cmp").exists()


from test_report import Page, needs_browser  # noqa: E402


@needs_browser
@pytest.mark.timeout(300)
def test_the_page_in_chromium(pair):
    from ffcv_resnet.explain.browser import chromium_page
    _, _, out, _ = pair
    c = json.loads((out / "compare.json").read_text())
    with chromium_page() as p:
        page = Page(p, out / "compare.html")
        assert page.text("#verdict") == c["summary"]
        assert page.text("#fixed-count") == str(len(c["fixed"]))
        assert page.text("#broke-count") == str(len(c["broke"]))
        rows = p.evaluate("""() => [...document.querySelectorAll('#tile-rows tr')].map(
            (tr) => [+tr.dataset.index, tr.dataset.kind])""")
        assert sorted(map(tuple, rows)) == sorted((r["index"], r["kind"]) for r in c["shown"])
        cells = p.evaluate("""() => [...document.querySelectorAll('#two-by-two td')].map(
            (td) => td.textContent)""")
        t = c["table"]
        assert cells == ["A right", str(t["both_right"]), str(t["only_a_right"]), "A wrong",
                         str(t["only_b_right"]), str(t["both_wrong"])]
        tiles = p.evaluate("() => document.querySelectorAll('#tile-rows .tile').length")
        assert tiles == 3 * len(c["shown"])  # image and both sides' maps
        loaded = p.evaluate("""async () => { const img = new Image();
            img.src = D.sheet; await img.decode(); return [img.naturalWidth, img.naturalHeight]; }""")
        assert loaded == [96, 32 * len(c["shown"])]
        assert page.problems == []


def _edit_test_set(run: Path, **changes) -> None:
    e = json.loads((run / "errors.json").read_text())
    e["test"].update(changes)
    e["test"] = {k: v for k, v in e["test"].items() if v is not ...}
    (run / "errors.json").write_text(json.dumps(e))


def _compare(args, tmp_path):
    from ffcv_resnet.compare.compare import CompareSettings, compare_runs
    from ffcv_resnet.config import parse
    return compare_runs(parse(CompareSettings, [str(x) for x in args]), log=lambda *_: None)


def test_runs_pair_by_the_content_of_their_test_images(pair, learnable_data, tmp_path):
    """A run names its test images by content: a source moved or copied (another fingerprint)
    still pairs, other images do not."""
    from ffcv_resnet.data.betons import beton_path, split_content
    from ffcv_resnet.data.loaders import load_all
    import torch
    a, b, _, _ = pair
    images, labels = load_all(beton_path(learnable_data, "test"), torch.device("cpu"))
    content = split_content(images.permute(0, 2, 3, 1).numpy(), labels.numpy())
    for run in (a, b):
        assert json.loads((run / "errors.json").read_text())["test"]["content"] == content
    moved = tmp_path / "moved"
    shutil.copytree(b, moved, ignore=shutil.ignore_patterns(".lock"))
    _edit_test_set(moved, fingerprint="0" * 16)  # the source's path or time changed
    c = _compare(["--compare.a", a, "--compare.b", moved, "--compare.out", tmp_path / "o",
                  "--data.dir", learnable_data], tmp_path)
    assert c["test_set"] == "the same test images (by content)"
    _edit_test_set(moved, content="1" * 16)
    with pytest.raises(UserError, match="evaluated on another test set"):
        read_sides([str(a)], [str(moved)])


def test_older_records_pair_only_when_asserted_and_checked_against_the_data(
        pair, learnable_data, tmp_path):
    """Records without a content identity (and another source fingerprint, as a copy of the
    data made in another session) are refused with the way out; asserted, their labels are
    checked against the data; a record without model.pt is compared without tiles."""
    a, b, _, _ = pair
    old = {}
    for name, run in (("a", a), ("b", b)):
        old[name] = tmp_path / f"old-{name}"
        shutil.copytree(run, old[name], ignore=shutil.ignore_patterns(".lock"))
        _edit_test_set(old[name], content=..., fingerprint=name * 16)
    (old["a"] / "model.pt").unlink()  # a committed record: its JSON files, no weights
    args = ["--compare.a", old["a"], "--compare.b", old["b"], "--compare.out", tmp_path / "o",
            "--data.dir", learnable_data]
    with pytest.raises(UserError, match="--compare.same_test_set true pairs them"):
        _compare(args, tmp_path)
    c = _compare([*args, "--compare.same_test_set", "true"], tmp_path)
    assert c["test_set"].startswith("asserted by --compare.same_test_set")
    assert "has no model.pt" in c["tiles_left_out"] and c["shown"] == [] and not c["maps"]
    saved = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert saved["table"] == c["table"] and saved["tiles_left_out"] == c["tiles_left_out"]
    e = json.loads((old["b"] / "errors.json").read_text())
    assert e["errors"], "the toy run made no error to tamper with"
    e["errors"][0]["true"] = (e["errors"][0]["true"] + 1) % 10  # another data set's label
    (old["b"] / "errors.json").write_text(json.dumps(e))
    with pytest.raises(UserError, match="not the same test set"):
        _compare([*args[:5], tmp_path / "o2", *args[6:], "--compare.same_test_set", "true"],
                 tmp_path)
