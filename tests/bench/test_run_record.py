"""benchmarks/run_record.py: a finished run's record, its kept files and its comparison with the
recorded baseline (checked to pair exactly those two runs), and the README's side-by-side table."""
from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import ROOT, fake_run, TWO_CLASS_LABELS

sys.path.insert(0, str(ROOT))
from benchmarks import run_record  # noqa: E402
from ffcv_resnet.compare.compare import comparison  # noqa: E402
from ffcv_resnet.compare.runs import read_sides  # noqa: E402


def finished(tmp_path, name: str, wrong: dict[int, int], run_id: str):
    path = fake_run(tmp_path, name, wrong, TWO_CLASS_LABELS, run_id,
                    config={"training.batch_size": 512})
    (path / "history.jsonl").write_text(json.dumps({"run_id": run_id, "epoch": 1,
                                                    "test_accuracy": 0.5}) + "\n")
    return path


def record(run, name, out, *extra) -> int:
    argv = ["run_record.py", str(run), "--name", name, "--git", "abc1234", "--date",
            "2026-12-06", "--data", "toy", "--command", "train.py", "--out", str(out), *map(str, extra)]
    old = sys.argv
    sys.argv = argv
    try:
        return run_record.main()
    finally:
        sys.argv = old


@pytest.fixture
def two(tmp_path):
    """A baseline run (12 errors) and a run that fixes 10 of them and breaks 2, compared."""
    a = finished(tmp_path, "a", {i: 1 - TWO_CLASS_LABELS[i] for i in range(12)}, "ra")
    b = finished(tmp_path, "b", {i: 1 - TWO_CLASS_LABELS[i] for i in range(10, 14)}, "rb")
    c = comparison(*read_sides([str(a)], [str(b)]), seed=0)
    (tmp_path / "compare.json").write_text(json.dumps({**c, "test_set": "f" * 16}))
    return a, b, tmp_path / "compare.json", tmp_path / "results"


def test_a_run_against_its_baseline_is_recorded_with_its_files(two):
    a, b, cmp, out = two
    assert record(a, "base", out) == 0
    assert record(b, "cand", out, "--recipe", "candidate", "--against", "base",
                  "--compare", cmp) == 0
    r = json.loads((out / "run-cand.json").read_text())
    assert r["recipe"] == "candidate" and r["run_id"] == "rb"
    v = r["against"]
    assert (v["baseline"], v["fixed"], v["broke"]) == ("base", 10, 2)
    assert v["difference"] == pytest.approx(0.08) and v["mcnemar_p"] == pytest.approx(2 * 79 / 4096)
    md = (out / "run-cand.md").read_text()
    assert md == run_record.markdown(r)
    assert "Against base (default): +8.00 points" in md and "this run is better" in md
    assert sorted(p.name for p in (out / "runs" / "cand").iterdir()) == sorted(
        [*run_record.KEPT, "compare-base.json"])
    assert (out / "runs" / "base" / "errors.json").read_bytes() == (a / "errors.json").read_bytes()
    sys.path.insert(0, str(ROOT / "scripts"))
    from readme import runs_table
    table = runs_table([r, json.loads((out / "run-base.json").read_text())])
    rows = [line for line in table.splitlines() if line.startswith("| base") or
            line.startswith("| cand")]
    assert rows[0].startswith("| base | default |") and "(the baseline)" in rows[0]
    assert rows[1].startswith("| cand | candidate |") and "vs base: +8.00" in rows[1]


def test_a_comparison_of_other_runs_is_refused(two, capsys):
    a, b, cmp, out = two
    assert record(a, "base", out) == 0
    swapped = json.loads(cmp.read_text())
    swapped["a"], swapped["b"] = swapped["b"], swapped["a"]
    cmp.write_text(json.dumps(swapped))
    assert record(b, "cand", out, "--against", "base", "--compare", cmp) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pairs ['rb'] (A) with ['ra'] (B)" in err
    assert not (out / "run-cand.json").exists() and not (out / "runs" / "cand").exists()
    assert record(b, "cand", out, "--against", "base") == 2  # --compare missing
    capsys.readouterr()
    assert record(b, "cand", out, "--against", "nobody", "--compare", cmp) == 2
    assert f"no recorded run nobody in {out}" in capsys.readouterr().err
    assert record(b, "../../escaped", out) == 2 and "a record's name" in capsys.readouterr().err
    assert not [p for p in out.parent.rglob("*escaped*")]


def test_a_failed_copy_keeps_the_old_files_and_leaves_no_temporary(two, monkeypatch, capsys):
    a, _, _, out = two
    assert record(a, "base", out) == 0
    before = (out / "runs" / "base" / "metrics.json").read_bytes()
    (a / "metrics.json").write_text((a / "metrics.json").read_text().replace('"x"', '"y"'))
    calls = []

    def failing(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(run_record.shutil, "copy2", failing)
    assert record(a, "base", out) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert (out / "runs" / "base" / "metrics.json").read_bytes() == before
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["base"]
