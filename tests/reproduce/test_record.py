"""The reproduce record: statistics over seeds, cross-seed errors, start-ups never averaged
across caches, and the table it renders."""
from __future__ import annotations

import pytest

from ffcv_resnet.reproduce.record import by_cache, cross_seed, Record, stats, summary, TrainResult


def test_stats_and_cross_seed_errors():
    s = stats([0.9, 0.92, 0.94])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.92) and s["sd"] == pytest.approx(0.02)
    assert (s["min"], s["max"]) == (0.9, 0.94) and stats([1.0])["sd"] == 0.0
    c = cross_seed({0: [1, 2, 3], 1: [2, 3, 4], 2: [3, 2]})
    assert c["always_wrong"] == [2, 3] and c["sometimes_wrong"] == [1, 4]


def test_cold_and_warm_start_ups_are_never_averaged_together():
    seeds = [TrainResult(stage="s", run_dir="r", log="l", recipe="", seed=0, errors=1, epochs=1,
                         compile="on", total_seconds=60.0, error_indices=[], test_accuracy=0.9,
                         train_seconds=12.0, images_per_second=9e4, compile_seconds=c,
                         startup_seconds=c + 5, compile_cache=cache)
             for c, cache in ((40.0, "cold"), (6.0, "warm"), (8.0, "warm"))]
    s = summary(seeds)
    assert s["compile_seconds_cold"]["mean"] == 40.0 and s["compile_seconds_cold"]["n"] == 1
    assert s["compile_seconds_warm"]["mean"] == 7.0 and s["startup_seconds_warm"]["n"] == 2
    assert "compile_seconds" not in s and "compile_seconds_off" not in s
    assert by_cache(s, "compile_seconds") == "40.00 (cold cache); 7.00 (warm cache, mean of 2)"


def test_a_benchmark_stage_stopped_mid_suite_is_named_in_the_table():
    """run_all names the suite it is in before it starts it: a stage killed at its limit leaves
    that suite 'running' in its plan, and the record's table says it stopped unfinished."""
    from ffcv_resnet.reproduce.record import markdown
    r = {"device": "dev", "device_type": "cpu", "started": "s", "status": "finished",
         "torch": "t", "cuda": None, "date": "d", "git_sha": "g", "smoke": True,
         "data": {"source_kind": "k", "source": "/a/b", "counts": {"train": 1, "test": 1}},
         "command": "c", "summary": {}, "seeds": [], "goals": {}, "skipped": [],
         "cross_seed": {"seeds": [], "always_wrong": [], "sometimes_wrong": []},
         "budget_minutes": 7, "bench": {"budget_seconds": 150, "plan": [
             {"suite": "loader", "estimated_seconds": 10, "skipped": False, "seconds": 12},
             {"suite": "train", "estimated_seconds": 70, "skipped": False, "running": True},
             {"suite": "epoch", "estimated_seconds": 120, "skipped": True, "seconds_left": 5}]}}
    assert ("Benchmarks within 150 s: loader 12 s (estimated 10), train stopped unfinished "
            "(estimated 70 s); skipped: epoch (needed ~120 s).") in markdown(Record.from_dict(r))
