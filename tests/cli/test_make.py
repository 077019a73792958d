"""The Makefile's targets as a user types them (printed with make -n, nothing run)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow,  # starts make
              pytest.mark.skipif(shutil.which("make") is None, reason="no make here")]


def _planned(*args, env=None) -> list[str]:
    r = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if "scripts/" in line]


def test_make_smoke_writes_where_run_says_and_runs_smoke_by_default():
    for planned, folder in ((_planned("smoke", "RUN=runs/mine"), "runs/mine"),
                            (_planned("smoke", env={"RUN": "runs/env"}), "runs/env"),
                            (_planned("smoke"), "runs/smoke")):
        train = next(line for line in planned if "scripts/train.py" in line)
        explain = next(line for line in planned if "scripts/explain.py" in line)
        assert f"--run.dir {folder} " in train and explain.endswith(f"--run.dir {folder}")
        assert "configs/smoke.yaml" in train


def test_make_test_fast_leaves_the_slow_tests_out():
    (line,) = [x for x in subprocess.run(["make", "-n", "test-fast"], cwd=ROOT,
                                         capture_output=True, text=True, timeout=60)
               .stdout.splitlines() if "pytest" in x]
    assert '-m "not slow"' in line
