"""benchmarks/run_record.py: a finished run's record, its kept files and its comparison with the
recorded baseline (checked to pair exactly those two runs), and the README's side-by-side table."""
from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import ROOT, fake_run, TWO_CLASS_LABELS

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from benchmarks import run_record  # noqa: E402
from ffcv_resnet.compare.compare import comparison  # noqa: E402
from ffcv_resnet.compare.runs import read_sides  # noqa: E402
from readme import runs_table  # noqa: E402


def finished(tmp_path, name: str, wrong: dict[int, int], run_id: str):
    path = fake_run(tmp_path, name, wrong, TWO_CLASS_LABELS, run_id,
                    config={"training.batch_size": 512})
    (path / "history.jsonl").write_text(json.dumps({"run_id": run_id, "epoch": 1,
                                                    "test_accuracy": 0.5}) + "\n")
    return path


def record(run, name, out, *extra, recipe="default") -> int:
    argv = ["run_record.py", str(run), "--name", name, "--recipe", recipe, "--git", "abc1234",
            "--date", "2026-12-06", "--data", "toy", "--command", "train.py", "--out", str(out),
            *map(str, extra)]
    old = sys.argv
    sys.argv = argv
    try:
        return run_record.main()
    finally:
        sys.argv = old


def table_rows(out) -> dict[str, str]:
    table = runs_table([json.loads(p.read_text()) for p in out.glob("run-*.json")])
    return {line.split(" | ")[0][2:]: line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| run |")}


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
    assert table_rows(out)["base"].startswith("| base | default | 1 | 88.00% | (not compared)")
    assert record(b, "cand", out, "--against", "base", "--compare", cmp,
                  recipe="candidate") == 0
    r = json.loads((out / "run-cand.json").read_text())
    assert r["recipe"] == "candidate" and r["run_id"] == "rb"
    v = r["against"]
    assert (v["baseline"], v["baseline_run_id"], v["fixed"], v["broke"]) == ("base", "ra", 10, 2)
    assert v["difference"] == pytest.approx(0.08) and v["mcnemar_p"] == pytest.approx(2 * 79 / 4096)
    md = (out / "run-cand.md").read_text()
    assert "Against base (default): +8.00 points" in md and "this run is better" in md
    assert "McNemar p = 0.0386 (10 fixed, 2 broke)" in md  # compare.py's own line says the same
    assert sorted(p.name for p in (out / "runs" / "cand").iterdir()) == sorted(
        [*run_record.KEPT, "compare-base.json"])
    assert (out / "runs" / "base" / "errors.json").read_bytes() == (a / "errors.json").read_bytes()
    rows = table_rows(out)
    assert "(the baseline)" in rows["base"]
    assert rows["cand"].startswith("| cand | candidate |") and "vs base: +8.00" in rows["cand"]
    # the baseline recorded again from another run: the comparison is stale and says so
    assert record(b, "base", out) == 0
    assert "compared with an earlier record of base (run ra): compare again" in \
        table_rows(out)["cand"]


def test_a_comparison_of_other_runs_or_a_damaged_one_is_refused(two, capsys):
    a, b, cmp, out = two
    assert record(a, "base", out) == 0
    good = cmp.read_text()
    swapped = json.loads(good)
    swapped["a"], swapped["b"] = swapped["b"], swapped["a"]
    cmp.write_text(json.dumps(swapped))
    capsys.readouterr()
    assert record(b, "cand", out, "--against", "base", "--compare", cmp) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pairs ['rb'] (A) with ['ra'] (B)" in err
    assert not (out / "run-cand.json").exists() and not (out / "runs" / "cand").exists()
    for damaged in ("[1, 2]", '{"mode": "runs", "a": ["x"], "b": []}', "{", ""):
        cmp.write_text(damaged)
        assert record(b, "cand", out, "--against", "base", "--compare", cmp) == 2
        assert capsys.readouterr().err.startswith("error: --against base --compare ")
    cmp.write_text(good)
    assert record(b, "cand", out, "--against", "base") == 2
    assert "--against and --compare go together" in capsys.readouterr().err
    assert record(b, "cand", out, "--against", "nobody", "--compare", cmp) == 2
    assert f"no recorded run nobody in {out}" in capsys.readouterr().err
    assert record(b, "../../escaped", out) == 2 and "a record's name" in capsys.readouterr().err
    assert not [p for p in out.parent.rglob("*escaped*")]
    assert record(b, "cand", out, recipe="a | b") == 2 and "no '|'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["run-base.json", "run-base.md", "runs"]


@pytest.mark.parametrize("damage", ["metrics", "config", "key", "other run"])
def test_a_damaged_run_folder_is_one_line(two, capsys, damage):
    _, b, _, out = two
    if damage == "metrics":
        (b / "metrics.json").write_text("{")
    elif damage == "config":
        (b / "config.yaml").write_text("run_id: rb\ntraining: [\n")
    elif damage == "key":
        m = json.loads((b / "metrics.json").read_text())
        del m["peak_lr"]
        (b / "metrics.json").write_text(json.dumps(m))
    else:
        e = json.loads((b / "errors.json").read_text())
        (b / "errors.json").write_text(json.dumps({**e, "run_id": "someone-else"}))
    assert record(b, "cand", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() or not list(out.iterdir())


def test_names_that_look_like_temporaries_keep_their_own_files(two):
    a, b, _, out = two
    assert record(a, "base.old", out) == 0 and record(b, "base.tmp", out) == 0
    assert record(a, "base", out) == 0 and record(a, "base", out) == 0  # twice: replaced
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["base", "base.old", "base.tmp"]
    for name in ("base.old", "base.tmp"):
        kept = json.loads((out / "runs" / name / "metrics.json").read_text())["run_id"]
        assert kept == json.loads((out / f"run-{name}.json").read_text())["run_id"]


def test_a_failed_copy_or_write_keeps_the_old_record_whole(two, monkeypatch, capsys):
    a, _, _, out = two
    assert record(a, "base", out) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (a / "history.jsonl").write_text((a / "history.jsonl").read_text() * 2)
    copy, write = shutil.copy2, run_record.atomic_write_bytes
    for fail in ("copy", "write"):
        calls = []

        def failing(*args, fail_now=(fail,)):
            calls.append(args)
            if len(calls) == (2 if fail_now[0] == "copy" else 1):  # a copy, or the table
                raise OSError(28, "No space left on device")
            return (copy if fail_now[0] == "copy" else write)(*args)

        monkeypatch.setattr(run_record.shutil, "copy2", failing if fail == "copy" else copy)
        monkeypatch.setattr(run_record, "atomic_write_bytes",
                            failing if fail == "write" else write)
        assert record(a, "base", out) == 1
        assert "No space left on device" in capsys.readouterr().err
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, fail
