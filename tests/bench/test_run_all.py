"""benchmarks/run_all.py: records and tables, unknown suites and sizes refused, budgets."""
from __future__ import annotations

import json

import pytest

from conftest import run_script


pytestmark = pytest.mark.slow  # every test here starts a process


def test_suite_writes_records_and_a_table(learnable_data, tmp_path):
    out = tmp_path / "results"
    r = run_script("benchmarks/run_all.py", "--data.dir", learnable_data, "--bench.out", out,
                   "--bench.scale", "0.05", "--bench.batch_size", "8", "--bench.device", "cpu",
                   "--bench.startup_compile", "off", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (out / "cpu.md").read_text()  # the device page gathers every suite's table
    for suite in ("loader", "gradcam", "train", "epoch", "startup"):
        assert f"### {suite}" in text
        (path,) = out.glob(f"{suite}-*.json")
        records = json.loads(path.read_text())
        assert records and all(r["suite"] == suite for r in records)
        for rec in records:
            for key in ("device", "torch", "date", "git_sha", "name", "timed"):
                assert rec[key] not in (None, ""), (suite, key)
    loader = json.loads(next(out.glob("loader-*.json")).read_text())
    assert [r["name"] for r in loader] == ["ffcv", "ffcv+augment", "resident+augment",
                                           "torchvision"]
    assert all(r["images_per_second"] > 0 and r["batch_size"] == 8 for r in loader)
    steps = json.loads(next(out.glob("train-*.json")).read_text())
    assert {(r["precision"], r["channels_last"]) for r in steps} == {
        ("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)}
    assert all(r["step_flops"] > 0 and r["ms_per_step"] > 0 for r in steps)
    gradcam = {r["name"] for r in json.loads(next(out.glob("gradcam-*.json")).read_text())}
    assert {"gradcam: ours batched", "gradcam: grad-cam batched", "ROAD combined: grad-cam",
            "ROAD imputation alone: grad-cam"} <= gradcam
    startup = json.loads(next(out.glob("startup-*.json")).read_text())
    assert [r["name"] for r in startup] == ["cold", "warm"]
    assert all(0 < r["startup_seconds"] < r["total_seconds"] for r in startup)
    for suite in ("loader", "gradcam", "train", "epoch", "startup"):  # each suite's own table
        assert f"git {startup[0]['git_sha']}" in (out / f"{suite}-cpu.md").read_text()
    # each table says how it was timed: a median of the repeats, or one run per row
    assert "; one run per row;" in (out / "startup-cpu.md").read_text()
    assert "; median of 2 repeats after warm-up;" in (out / "loader-cpu.md").read_text()


def test_the_dynamics_suite_times_both_steps_in_turns_and_says_how_often(learnable_data,
                                                                         tmp_path):
    out = tmp_path / "results"
    r = run_script("benchmarks/run_all.py", "--data.dir", learnable_data, "--bench.out", out,
                   "--bench.scale", "0.05", "--bench.batch_size", "4", "--bench.device", "cpu",
                   "--bench.suites", "dynamics", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    records = json.loads((out / "dynamics-cpu.json").read_text())
    assert [x["name"] for x in records] == ["without dynamics", "with dynamics"]
    turns = {len(x["all_ms_per_step"]) for x in records}
    assert turns == {10} and records[0]["extra_fraction"] == 0
    assert all(x["ms_per_step"] > 0 and x["batch_size"] == 4 for x in records)
    assert "median of 10 repeats" in (out / "dynamics-cpu.md").read_text()  # what it did


def test_suite_rejects_unknown_suites(learnable_data, tmp_path):
    r = run_script("benchmarks/run_all.py", "--data.dir", learnable_data, "--bench.suites",
                   "loader,speed", "--bench.out", tmp_path, timeout=120)
    assert r.returncode != 0 and "--bench.suites" in r.stderr


def test_a_budget_skips_and_names_the_suites_that_do_not_fit(learnable_data, tmp_path):
    out = tmp_path / "results"
    r = run_script("benchmarks/run_all.py", "--data.dir", learnable_data, "--bench.out", out,
                   "--bench.scale", "0.05", "--bench.batch_size", "8", "--bench.device", "cpu",
                   "--bench.suites", "loader,train", "--bench.compile_modes", "default",
                   "--bench.budget_seconds", "60", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads((out / "bench-plan-cpu.json").read_text())
    by = {x["suite"]: x for x in plan["suites"]}
    # a CPU compile is estimated at minutes: the train suite with a compile mode cannot fit
    assert by["train"]["skipped"] and by["train"]["estimated_seconds"] > 60
    assert not by["loader"]["skipped"] and 0 < by["loader"]["seconds"] < 60
    assert plan["budget_seconds"] == 60 and plan["probe_step_seconds_per_image"] > 0
    assert not (out / "train-cpu.json").exists() and (out / "loader-cpu.json").exists()
    assert "[train] skipped: needs ~" in r.stdout
    assert "Skipped by the latest run's time budget" in (out / "cpu.md").read_text()
    assert "train (needed ~" in (out / "cpu.md").read_text()


@pytest.mark.parametrize("option", [("--bench.scale", "0"), ("--bench.budget_seconds", "-1")])
def test_bad_sizes_are_refused_in_one_line(learnable_data, tmp_path, option):
    r = run_script("benchmarks/run_all.py", "--data.dir", learnable_data, "--bench.out",
                   tmp_path, *option, timeout=120)
    assert r.returncode == 2 and option[0] in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
