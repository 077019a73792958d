"""scripts/reproduce.py: the CPU smoke mode of the one command that reproduces every figure."""
from __future__ import annotations

import json

import pytest

from conftest import run_script
from ffcv_resnet.reproduce.stages import ReproduceConfig, reproduce
from ffcv_resnet.reproduce.record import cross_seed, stats


def test_stats_and_cross_seed_errors():
    s = stats([0.9, 0.92, 0.94])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.92) and s["sd"] == pytest.approx(0.02)
    assert (s["min"], s["max"]) == (0.9, 0.94) and stats([1.0])["sd"] == 0.0
    c = cross_seed({0: [1, 2, 3], 1: [2, 3, 4], 2: [3, 2]})
    assert c["always_wrong"] == [2, 3] and c["sometimes_wrong"] == [1, 4]


def test_smoke_mode_writes_a_complete_record_and_table(learnable_data, tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    r = run_script("scripts/reproduce.py", "--data.dir", learnable_data, "--reproduce.smoke",
                   "true", "--reproduce.out", out, "--reproduce.results", results, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((results / "reproduce-smoke-cpu.json").read_text())
    for key in ("device", "torch", "date", "git_sha", "data", "command"):
        assert record[key]
    seeds = record["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1] and all(s["epochs"] == 1 for s in seeds)
    for s in seeds:  # every figure comes from that seed's own run folder
        metrics = json.loads((out / f"seed-{s['seed']}" / "metrics.json").read_text())
        assert s["test_accuracy"] == metrics["test_accuracy"]
        assert s["train_seconds"] == metrics["train_seconds"]
    acc = record["summary"]["test_accuracy"]
    assert acc["mean"] == pytest.approx(sum(s["test_accuracy"] for s in seeds) / 2)
    assert record["calibration"]["recipe"] == "configs/reference-26ep.yaml"
    assert record["calibration"]["epochs"] == 1 and (out / "calibration" / "metrics.json").exists()
    errors = {s["seed"]: {e["index"] for e in json.loads(
        (out / f"seed-{s['seed']}" / "errors.json").read_text())["errors"]} for s in seeds}
    assert set(record["cross_seed"]["always_wrong"]) == errors[0] & errors[1]
    assert set(record["cross_seed"]["sometimes_wrong"]) == (errors[0] | errors[1]) - (
        errors[0] & errors[1])
    assert (out / "always-wrong.png").read_bytes()[:4] == b"\x89PNG"
    vs = record["vs_calibration"]  # compare.py's figures: calibration (A) against the seeds (B)
    assert vs["seed_0"]["mode"] == "runs" and vs["seeds"]["mode"] == "groups"
    cal = {e["index"] for e in json.loads((out / "calibration" / "errors.json").read_text())[
        "errors"]}
    assert vs["seed_0"]["fixed"] == len(cal - errors[0]) and vs["seed_0"]["broke"] == len(
        errors[0] - cal)
    assert vs["seed_0"]["summary"] in (results / "reproduce-smoke-cpu.md").read_text()
    assert record["explain"]["errors"] == len(errors[0]) and record["explain"]["explain_seconds"]
    assert (results / "loader-smoke-cpu.json").exists() and (results / "cpu-smoke.md").exists()
    assert record["skipped"] == [] and record["goals"] == {}
    table = (results / "reproduce-smoke-cpu.md").read_text()
    assert "| default recipe, 1 epochs | 2 |" in table and "calibration reference-26ep" in table


def test_a_budget_too_small_skips_stages_and_says_so(learnable_data, tmp_path):
    rc = ReproduceConfig(budget_minutes=1e-6, smoke=True, out=str(tmp_path / "runs"),
                         results=str(tmp_path / "results"))
    record, json_path, md_path = reproduce(rc, learnable_data, "")
    assert [s["stage"] for s in record["skipped"]] == ["seed 0", "calibration", "explain", "bench"]
    assert record["seeds"] == [] and "Skipped seed 0" in md_path.read_text()
    assert json.loads(json_path.read_text())["skipped"] == record["skipped"]


def test_bad_folders_and_recipes_are_refused_before_any_training(learnable_data, tmp_path):
    from ffcv_resnet.errors import UserError
    (tmp_path / "file").write_text("x")
    foreign = tmp_path / "out" / "seed-1"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epochs: [oops\n")
    for kwargs, message in [({"results": str(tmp_path / "file")}, "is not a folder"),
                            ({"out": str(tmp_path / "out")}, "not a run's"),
                            ({"calibration": str(bad)}, "cannot read config")]:
        rc = ReproduceConfig(smoke=True, **{"out": str(tmp_path / "o"),
                                            "results": str(tmp_path / "r"), **kwargs})
        with pytest.raises(UserError, match=message):
            reproduce(rc, learnable_data, "")
        assert not (tmp_path / "o" / "seed-0").exists()
    assert (foreign / "mine.txt").read_text() == "keep"
