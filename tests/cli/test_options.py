"""Every script checks its options before loading torch: a typo is one line, exit status 2, at
once; the commands the README and docs show parse as shown."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # starts a process per script

SCRIPTS = ("train", "explain", "compare", "predict", "reproduce", "prepare_data")
PROBE = """
import runpy, sys
sys.argv = [{script!r}, *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    print("status", e.code, "torch" in sys.modules, "ffcv" in sys.modules, file=sys.stderr)
"""


def _run(script: str, *args: str) -> tuple[int, list[str], bool, bool]:
    """(exit status, stderr lines before the probe's, torch loaded?, ffcv loaded?)."""
    r = subprocess.run([sys.executable, "-c", PROBE.format(script=f"scripts/{script}.py",
                                                           args=list(args))],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    *lines, probe = r.stderr.strip().splitlines()
    _, status, torch, ffcv = probe.split()
    return int(status), lines, torch == "True", ffcv == "True"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_typo_is_one_line_before_torch_is_loaded(script):
    for args in (["--bogus.option", "1"], ["--data.dir"]):
        status, lines, torch, ffcv = _run(script, *args)
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert not torch and not ffcv, f"{script} loaded torch or ffcv before saying {lines}"


def test_bad_values_too_and_epochs_have_a_sane_cap():
    for script, args, message in (
            ("train", ["--training.epochs", "1e20"], "--training.epochs"),
            ("train", ["--augment.flip", "sometimes"], "--augment.flip"),
            ("explain", ["--explain.methods", "gradcam,nope"], "--explain.methods"),
            ("predict", ["--run.dir", "r"], "no images given"),
            ("compare", ["a", "b", "c"], "3 run folders given"),
            ("reproduce", ["--reproduce.budget_minutes", "-1"], "budget_minutes")):
        status, lines, torch, _ = _run(script, *args)
        assert status == 2 and len(lines) == 1 and message in lines[0] and not torch, lines


def _documented_commands() -> list[list[str]]:
    """Every scripts/*.py command in a fenced block of the README and docs/, as its argv."""
    found = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        blocks = re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].split("   #")[0].strip()
                m = re.search(r"(?:^|\s)(scripts/[a-z_]+\.py|benchmarks/run_all\.py)(\s.*)?$",
                              line)
                if m and "$" not in line:
                    found.append([m.group(1), *shlex.split(m.group(2) or "")])
    return found


def test_every_command_the_readme_and_docs_show_parses():
    """A stale command in the documentation (an option renamed or gone) fails here."""
    from ffcv_resnet.compare.compare import CompareSettings
    from ffcv_resnet.config import parse
    from ffcv_resnet.data.options import PrepareSettings
    from ffcv_resnet.explain.options import ExplainSettings
    from ffcv_resnet.finished.settings import TrainSettings
    from ffcv_resnet.predict.options import PredictSettings
    from ffcv_resnet.reproduce.options import ReproduceSettings
    sys.path.insert(0, str(ROOT))
    from benchmarks.run_all import BenchSettings
    settings = {"scripts/train.py": TrainSettings, "scripts/explain.py": ExplainSettings,
                "scripts/compare.py": CompareSettings, "scripts/predict.py": PredictSettings,
                "scripts/reproduce.py": ReproduceSettings,
                "scripts/prepare_data.py": PrepareSettings,
                "benchmarks/run_all.py": BenchSettings}
    commands = [c for c in _documented_commands() if c[0] in settings]
    assert len(commands) >= 10 and {c[0] for c in commands} >= {
        "scripts/train.py", "scripts/compare.py", "scripts/predict.py", "scripts/explain.py"}
    for script, *args in commands:
        if "--help" in args:
            continue
        args = [a.strip("[]") for a in args]  # "[--x v]": an optional part, shown so
        try:
            parse(settings[script], [str(ROOT / a) if a.startswith("configs/") else a
                                     for a in args])
        except Exception as e:  # noqa: BLE001 (a ConfigError names the stale option)
            pytest.fail(f"{script} {' '.join(args)}: {e}")
