"""scripts/compare.py on a real pair of CPU mini-runs: its figures, bad input in one line, and
the page in a headless browser."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import needs_browser, Page, run_script

from ffcv_resnet.errors import UserError


pytestmark = pytest.mark.slow  # every test here starts a process


def test_two_runs_given_as_positionals_compare_as_a_and_b(pair, learnable_data, tmp_path):
    a, b, out, _ = pair
    r = run_script("scripts/compare.py", a, b, "--compare.out", tmp_path / "pos",
                   "--data.dir", learnable_data)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((tmp_path / "pos" / "compare.json").read_text())
    want = json.loads((out / "compare.json").read_text())
    assert (got["table"], got["fixed"], got["broke"]) == (want["table"], want["fixed"],
                                                          want["broke"])


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
    ("litter-out", "holds files that are not a comparison's"),
    ("positional-and-a", "either as two positionals (A B) or with --compare.a"),
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
    elif case == "litter-out":
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "thesis.tex").write_text("mine")
    elif case == "positional-and-a":
        args = [a, b, *args]
    else:
        from ffcv_resnet.data.convert import prepare
        prepare(tmp_path / "d", str(sources["batches-folder"]), log=lambda *_: None)
        args[7] = tmp_path / "d"
    if case in ("empty-side", "same", "out-in-run", "positional-and-a"):
        r = run_script("scripts/compare.py", *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    else:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compare_runs(parse(CompareSettings, [str(x) for x in args]), log=lambda *_: None)
    if case == "litter-out":
        assert [p.name for p in (tmp_path / "o").iterdir()] == ["thesis.tex"]
    else:
        assert not (tmp_path / "o").exists()
    assert not (a / "cmp").exists()


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
        for kind in ("fixed", "broke"):  # each run's cleanlab flags among them
            assert page.text(f"#{kind}-suspects") == (
                f", {c['label_suspect'][kind]} label-suspect (cleanlab)")
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
