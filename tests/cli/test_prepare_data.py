"""scripts/prepare_data.py: bad input in one line, and the up-to-date check without torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


pytestmark = pytest.mark.slow  # every test here starts a process


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_prepare_cli_reports_bad_input_in_one_line(tmp_path, sources):
    ok = _run("scripts/prepare_data.py", "--data.source", str(sources["image-tar"]),
              "--data.dir", str(tmp_path / "d"))
    assert ok.returncode == 0 and "train 30, test 20" in ok.stdout
    again = _run("scripts/prepare_data.py", "--data.source", str(sources["image-tar"]),
                 "--data.dir", str(tmp_path / "d"))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    for args, message in [(["--data.source", str(tmp_path / "missing")], "no such file"),
                          (["--data.force", "False "], None),
                          (["--data.force", "maybe"], "bad value 'maybe' for --data.force"),
                          (["--data.nope", "1"], "unrecognized arguments")]:
        r = _run("scripts/prepare_data.py", "--data.dir", str(tmp_path / "d"), *args)
        if message is None:
            assert r.returncode == 0
            continue
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no traceback


def test_up_to_date_check_stays_light():
    # a rerun of prepare_data.py must return at once: its modules must not pull in torch or ffcv
    r = _run("-c", "import sys; sys.path.insert(0, '.'); import ffcv_resnet.data.convert, "
                   "ffcv_resnet.config; print('torch' in sys.modules, 'ffcv' in sys.modules)")
    assert r.returncode == 0 and r.stdout.split() == ["False", "False"], r.stderr
