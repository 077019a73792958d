"""scripts/reproduce.py in its CPU smoke mode: the plan's stages, their records and bundle,
budgets, failures, kills (in the preflight, after a seed, of the whole command) and the folders
it may replace."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_script

from ffcv_resnet.reproduce.options import ReproduceConfig
from ffcv_resnet.reproduce.stages import reproduce


pytestmark = pytest.mark.slow  # every test here starts a process


def _start(learnable_data, out, results, *extra):
    import subprocess
    import sys
    from conftest import ROOT
    return subprocess.Popen([sys.executable, "scripts/reproduce.py", "--data.dir",
                             str(learnable_data), "--reproduce.smoke", "true", "--reproduce.out",
                             str(out), "--reproduce.results", str(results), "--reproduce.bench",
                             "false", "--reproduce.calibration", "", "--reproduce.ablations", "",
                             *map(str, extra)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _kill_when(p, path, ready, timeout=600):
    """SIGKILL `p` as soon as the record at `path` satisfies `ready` (polled)."""
    import signal
    import time
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert p.poll() is None, "reproduce ended before the moment to kill it"
            assert time.monotonic() < deadline
            try:
                if ready(json.loads(path.read_text())):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def _processes_naming(text: str) -> list[str]:
    import subprocess
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if text in line and "ps -eo" not in line]


def test_smoke_mode_writes_a_complete_record_and_table(learnable_data, tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    r = run_script("scripts/reproduce.py", "--data.dir", learnable_data, "--reproduce.smoke",
                   "true", "--reproduce.out", out, "--reproduce.results", results,
                   "--reproduce.ablations", "configs/ablations/init-pytorch.yaml",
                   # both suites must run: an estimate from a step timed on a busy machine
                   # would not fit the smoke mode's 90 s
                   "--reproduce.bench_seconds", "400", timeout=900)
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
    assert all(s["compile_cache"] == "off" for s in seeds)  # the CPU does not compile
    import yaml  # every run compiles into the command's own cache, emptied at its start
    config = yaml.safe_load((out / "seed-1" / "config.yaml").read_text())
    assert config["training"]["compile_cache"] == str(out.resolve() / "compile-cache")
    # nothing resumes here: no last.pt is written inside the budget
    assert config["run"]["checkpoint_every"] == 0
    assert json.loads((out / "seed-1" / "metrics.json").read_text())["checkpoint_seconds"] == 0
    plan = record["bench"]["plan"]  # run_all's own account of each suite within its budget
    assert [x["suite"] for x in plan] == ["loader", "gradcam"]
    assert all(not x["skipped"] and x["seconds"] > 0 and x["estimated_seconds"] > 0
               for x in plan)
    table = (results / "reproduce-smoke-cpu.md").read_text()
    assert "| default recipe, 1 epochs | 2 |" in table and "calibration reference-26ep" in table
    (a,) = record["ablations"]  # one seed-0 run of the default changed by the file, vs seed 0
    assert (a["stage"], a["recipe"], a["seed"]) == ("ablation init-pytorch",
                                                    "configs/ablations/init-pytorch.yaml", 0)
    config = yaml.safe_load((out / "ablation-init-pytorch" / "config.yaml").read_text())
    assert config["model"]["init"] == "pytorch" and config["training"]["epochs"] == 1
    ab = {e["index"] for e in json.loads((out / "ablation-init-pytorch" / "errors.json")
                                         .read_text())["errors"]}
    v = a["vs_seed_0"]
    assert v["mode"] == "runs" and (v["fixed"], v["broke"]) == (len(errors[0] - ab),
                                                                len(ab - errors[0]))
    assert "| ablation init-pytorch (init-pytorch.yaml), 1 epochs | 1 |" in table
    assert f"Seed 0 (A) vs ablation init-pytorch (B): {v['summary']}." in table


def test_a_budget_too_small_skips_stages_and_says_so(learnable_data, tmp_path):
    rc = ReproduceConfig(budget_minutes=1e-6, smoke=True, out=str(tmp_path / "runs"),
                         results=str(tmp_path / "results"))
    record, json_path, md_path = reproduce(rc, learnable_data, "")
    assert [s["stage"] for s in record.skipped] == [
        "preflight", "seed 0", "explain", "bench", "seed 1", "calibration",
        "ablation reference-20ep", "ablation candidate-20ep", "ablation flip-alternate",
        "ablation ema", "ablation bn-bias-lr-64", "ablation init-pytorch",
        "ablation lr-0.2", "ablation init-pytorch-lr-0.2"]
    assert record.seeds == [] and "Skipped seed 0" in md_path.read_text()
    assert json.loads(json_path.read_text())["skipped"] == record.skipped
    assert all(s.state == "skipped" for s in record.stages) and record.status == "finished"


def test_the_preflight_checks_the_cpu_too(learnable_data, tmp_path):
    rc = ReproduceConfig(smoke=True, out=str(tmp_path / "runs"), seeds=1, explain=False,
                         bench=False, calibration="", ablations=(), budget_minutes=1.5,
                         results=str(tmp_path / "results"))
    record, json_path, md_path = reproduce(rc, learnable_data, "")
    assert record.stage("preflight").state == "done"
    checks = {c["check"]: c for c in record.preflight}  # the preflight runs on the CPU too
    assert checks["compiled training step"]["skipped"].startswith("compile is off on the CPU")
    assert checks["1-process NCCL group"]["skipped"] == "NCCL needs CUDA"
    for name in ("device", "bf16 matmul", "eager training step", "ffcv loader batch",
                 "resident loader batch", "1-process gloo group"):
        assert checks[name]["ok"] is True, checks[name]
    assert "Preflight: 6 of 8 checks passed; skipped: compiled training step, 1-process NCCL " \
        "group." in md_path.read_text()


def test_bad_folders_and_recipes_are_refused_before_any_training(learnable_data, tmp_path):
    from ffcv_resnet.errors import UserError
    (tmp_path / "file").write_text("x")
    foreign = tmp_path / "out" / "seed-1"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epochs: [oops\n")
    for kwargs, message in [({"results": str(tmp_path / "file")}, "is not a folder"),
                            ({"out": str(tmp_path / "out")}, "holds files reproduce did not "
                                                             "write"),
                            ({"calibration": str(bad)}, "cannot read config"),
                            ({"ablations": ("configs/ablations/nope.yaml",)},
                             "--reproduce.ablations configs/ablations/nope.yaml: no such recipe"),
                            ({"ablations": (str(bad),)}, "cannot read config")]:
        rc = ReproduceConfig(smoke=True, **{"out": str(tmp_path / "o"),
                                            "results": str(tmp_path / "r"), **kwargs})
        with pytest.raises(UserError, match=message):
            reproduce(rc, learnable_data, "")
        assert not (Path(rc.out) / "seed-0").exists() and not (Path(rc.out) / "logs").exists()
    assert (foreign / "mine.txt").read_text() == "keep"


def test_a_failing_stage_is_recorded_and_the_next_ones_run(learnable_data, tmp_path):
    """Every run diverges (a huge LR): each training stage fails with its line and log, the
    others still run, and the command ends with exit status 1 after writing the record."""
    out, results = tmp_path / "runs", tmp_path / "results"
    r = run_script("scripts/reproduce.py", "--data.dir", learnable_data, "--reproduce.smoke",
                   "true", "--reproduce.out", out, "--reproduce.results", results,
                   "--reproduce.bench", "false", "--reproduce.ablations", "",
                   "--reproduce.train_args", "--training.lr 1e9", timeout=900)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: 3 stage(s) failed (seed 0, seed "
                                                        "1, calibration)")
    record = json.loads((results / "reproduce-smoke-cpu.json").read_text())
    assert [f["stage"] for f in record["failed"]] == ["seed 0", "seed 1", "calibration"]
    for f in record["failed"]:
        assert f["error"].startswith("exit 3: error: training diverged in epoch 1")
        assert "training diverged" in open(f["log"]).read()
    assert record["seeds"] == [] and {"stage": "explain", "reason": "no seed was trained"} in \
        record["skipped"]
    assert (results / "reproduce-smoke-cpu.log").read_text().count("failed: exit 3") == 3
    assert "Failed calibration: exit 3" in (results / "reproduce-smoke-cpu.md").read_text()


def test_sigkill_after_the_first_seed_leaves_a_record_of_it(learnable_data, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    out, results = tmp_path / "runs", tmp_path / "results"
    bundle = tmp_path / "call" / "bundle.tar.gz"
    p = subprocess.Popen([sys.executable, "scripts/reproduce.py", "--data.dir", str(learnable_data),
                          "--reproduce.smoke", "true", "--reproduce.out", str(out),
                          "--reproduce.results", str(results), "--reproduce.bench", "false",
                          "--reproduce.explain", "false", "--reproduce.bundle", str(bundle)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = results / "reproduce-smoke-cpu.json"
    deadline = time.monotonic() + 600
    try:
        while True:
            assert p.poll() is None, "reproduce ended before its second seed"
            assert time.monotonic() < deadline
            if path.exists() and json.loads(path.read_text())["seeds"]:
                break
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    record = json.loads(path.read_text())  # whole: written atomically after the stage
    assert [s["seed"] for s in record["seeds"]] == [0] and record["calibration"] is None
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert record["seeds"][0]["test_accuracy"] == metrics["test_accuracy"]
    import tarfile
    with tarfile.open(bundle) as tar:  # the bundle, rewritten with that stage too
        names = tar.getnames()
    assert "results/reproduce-smoke-cpu.json" in names and "runs/seed-0/metrics.json" in names
    assert any(n.startswith("runs/logs/seed-0") for n in names)


def test_output_folders_in_a_run_or_unwritable_are_refused_first(learnable_data, tmp_path,
                                                                 trained_run):
    from ffcv_resnet.errors import UserError
    for kwargs, message in [({"out": str(trained_run)}, "inside the run folder"),
                            ({"out": str(trained_run / "sub")}, "inside the run folder"),
                            ({"results": str(trained_run / "results")}, "inside the run folder")]:
        rc = ReproduceConfig(smoke=True, **{"out": str(tmp_path / "o"),
                                            "results": str(tmp_path / "r"), **kwargs})
        with pytest.raises(UserError, match=message):
            reproduce(rc, learnable_data, "")
        assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()
    assert not (trained_run / "seed-0").exists() and not (trained_run / "sub").exists()


def test_a_command_killed_in_its_preflight_leaves_its_own_record_marked_cut_short(
        learnable_data, tmp_path):
    """A second command into the same folders, SIGKILLed during its preflight: its record (not
    the first command's) names the device and the preflight as unfinished, nothing of the first
    command's seed 0, and says it was cut short; the preflight's process died with it."""
    import time
    out, results = tmp_path / "runs", tmp_path / "results"
    first = _start(learnable_data, out, results, "--reproduce.explain", "false")
    assert first.wait(timeout=900) == 0
    path = results / "reproduce-smoke-cpu.json"
    before = json.loads(path.read_text())
    assert before["status"] == "finished" and len(before["seeds"]) == 2
    second = _start(learnable_data, out, results, "--reproduce.explain", "false")
    _kill_when(second, path, lambda r: r["started"] != before["started"]
               and r["stages"][0]["state"] == "running")
    record = json.loads(path.read_text())
    assert record["status"] == "running" and record["device"] and record["seeds"] == []
    assert [s["state"] for s in record["stages"]] == ["running", "planned", "planned"]
    table = (results / "reproduce-smoke-cpu.md").read_text()
    assert "Cut short, or still running" in table and "default recipe" not in table
    assert "Not ended: preflight (running when the record was last written), seed 0, seed 1" \
        in table
    time.sleep(3)  # the kernel's SIGKILL to the orphan is immediate; give ps a moment
    assert _processes_naming(str(out)) == []


def test_no_training_stage_outlives_a_killed_command(learnable_data, tmp_path):
    import time
    out, results = tmp_path / "runs", tmp_path / "results"
    p = _start(learnable_data, out, results, "--reproduce.explain", "false")
    _kill_when(p, results / "reproduce-smoke-cpu.json",
               lambda r: r["stages"][1]["state"] == "running")
    time.sleep(3)
    assert _processes_naming(str(out / "seed-0")) == []  # train.py died with its parent
    assert not (out / "seed-0" / "metrics.json").exists()


def test_a_stage_replaces_its_folder_only_when_it_starts(learnable_data, tmp_path):
    """Folders of stages that do not run are left as they are; an earlier command's run is
    replaced by the stage that starts there; a folder of someone else's is refused first."""
    out, results = tmp_path / "runs", tmp_path / "results"
    rc = ReproduceConfig(smoke=True, seeds=2, explain=False, bench=False, calibration="",
                         ablations=(), out=str(out), results=str(results))
    reproduce(rc, learnable_data, "")
    old = (out / "seed-1" / "config.yaml").read_text()
    (out / "seed-7").mkdir()
    (out / "seed-7" / ".lock").write_text("")
    import dataclasses
    record, _, _ = reproduce(dataclasses.replace(rc, budget_minutes=1e-6), learnable_data, "")
    assert all(s.state == "skipped" for s in record.stages)
    assert (out / "seed-1" / "config.yaml").read_text() == old  # skipped: untouched
    assert (out / "seed-7" / ".lock").exists()  # not a stage of this command: untouched
    (out / "seed-1" / "notes.txt").write_text("mine")
    from ffcv_resnet.errors import UserError
    with pytest.raises(UserError, match="seed-1: holds files reproduce did not write"):
        reproduce(rc, learnable_data, "")
    assert (out / "seed-1" / "notes.txt").read_text() == "mine"
    (out / "seed-1" / "notes.txt").unlink()
    record, _, _ = reproduce(rc, learnable_data, "")  # seed 1 runs: its old run is replaced
    assert (out / "seed-1" / "config.yaml").read_text() != old
    assert record.seeds[1].run_dir == str(out.resolve() / "seed-1")
    assert (out / "seed-7" / ".lock").exists()


def test_the_device_command_brings_back_few_small_files_and_its_commit(learnable_data, tmp_path):
    """scripts/device_command.sh: the command run on the GPU machine carries this checkout's
    commit and writes at most 8 files of at most 16 MiB, 2 folders deep, in $OUT (run here in
    smoke mode on the betons the tests made, its paths moved into a temporary folder)."""
    import shlex
    import subprocess
    import sys
    import tarfile
    from conftest import ROOT
    from ffcv_resnet.device import git_sha
    command = subprocess.run(["bash", "scripts/device_command.sh", "--reproduce.smoke", "true"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"FFCV_RESNET_GIT={git_sha()} " in command and len(command) < 2000
    reproduce_part = command.split("python3 ", 1)[1].split(" > ", 1)[0]
    out = tmp_path / "OUT"
    out.mkdir()
    # the machine's /tmp paths move into tmp_path first: $OUT is itself under /tmp here
    args = shlex.split(reproduce_part.replace("/tmp/", f"{tmp_path}/").replace(
        "$OUT", str(out)).replace(f"--data.source {tmp_path}/cifar", ""))
    args = [str(learnable_data) if a == f"{tmp_path}/data" else a for a in args]
    with open(out / "console.log", "w") as log:
        r = subprocess.run([sys.executable, *args, "--reproduce.bench", "false",
                            "--reproduce.ablations", "", "--reproduce.calibration", ""],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    assert r.returncode == 0, (out / "console.log").read_text()[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["console.log", "reproduce.tar.gz"]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    with tarfile.open(out / "reproduce.tar.gz") as tar:
        names = tar.getnames()
    assert "results/reproduce-smoke-cpu.json" in names and "runs/seed-0/report.png" in names
