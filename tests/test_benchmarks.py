"""The benchmark suite runs end to end on the CPU at a tiny size and writes well-formed records."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from conftest import ROOT, run_script


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


def test_readme_results_are_generated_from_the_records():
    from conftest import ROOT
    r = run_script(ROOT / "scripts" / "readme.py", "--check", timeout=60)
    assert r.returncode == 0, r.stderr


def test_suite_rejects_unknown_suites(learnable_data, tmp_path):
    r = run_script("benchmarks/run_all.py", "--data.dir", learnable_data, "--bench.suites",
                   "loader,speed", "--bench.out", tmp_path, timeout=120)
    assert r.returncode != 0 and "--bench.suites" in r.stderr


def test_gradcam_suite_without_the_package_times_ours_and_names_the_gap(monkeypatch):
    """The GPU machine's image lacks grad-cam and ttach: the suite must not import them, must
    still time our rows, and must say which rows it left out."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import bench_gradcam
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
        "pytorch_grad_cam", "ttach") else real(name, *a))
    for name in [m for m in sys.modules if m.startswith(("pytorch_grad_cam", "ttach"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # any import of it fails
    records, md = bench_gradcam.run(torch.device("cpu"), 4, 2, 1)
    names = {r["name"] for r in records}
    assert {"gradcam: ours batched", "scorecam: ours batched", "gradcam: ours one at a time",
            "ROAD imputation alone: ours"} <= names
    assert any(n.startswith("explain pass") for n in names)
    assert not any("grad-cam" in n for n in names)
    assert "Not run: the grad-cam package is not installed here" in md and "n/a" in md


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


def test_the_committed_tables_are_their_json_records_rendered():
    """A table in benchmarks/results is what its record renders to now, not a hand edit: the
    training-run and reproduce tables from their JSON, the gradcam suite's from its records."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import bench_gradcam, run_record
    from ffcv_resnet.reproduce import record as reproduce_record
    results = ROOT / "benchmarks" / "results"
    checked = 0
    for path in sorted(results.glob("run-*.json")):
        record = json.loads(path.read_text())
        assert run_record.markdown(record).strip() == path.with_suffix(".md").read_text().strip()
        checked += 1
    for path in sorted(results.glob("reproduce-*.json")):
        record = json.loads(path.read_text())
        rendered = reproduce_record.markdown(reproduce_record.Record.from_dict(record))
        assert rendered.strip() in path.with_suffix(".md").read_text()
        checked += 1
    for path in sorted(results.glob("gradcam-*.json")):
        records = json.loads(path.read_text())
        missing = None if any("grad-cam" in r["name"] for r in records) else "the package"
        table = bench_gradcam.markdown(records, missing)
        assert table.split("Not run:")[0].strip() in path.with_suffix(".md").read_text()
        checked += 1
    assert checked >= 2  # the CPU run's and the gradcam suite's records are committed
