"""The committed results: README blocks and tables are their JSON records rendered."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, run_script


pytestmark = pytest.mark.slow  # every test here starts a process


def test_readme_results_are_generated_from_the_records():
    from conftest import ROOT
    r = run_script(ROOT / "scripts" / "readme.py", "--check", timeout=60)
    assert r.returncode == 0, r.stderr


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
