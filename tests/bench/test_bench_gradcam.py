"""The gradcam suite without the reference package: ours timed, the gap named."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from conftest import ROOT


pytestmark = pytest.mark.slow  # every test here starts a process


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


def test_a_grad_cam_install_that_fails_to_import_is_a_named_gap(monkeypatch):
    """Installed but broken (an ImportError at import, as with mismatched wheels): the suite
    times ours and names the reason, instead of ending in a traceback."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import bench_gradcam
    for name in [m for m in sys.modules if m.startswith("pytorch_grad_cam")]:
        monkeypatch.delitem(sys.modules, name)
    real = importlib.import_module

    def broken(name, *a, **k):
        if name.startswith("pytorch_grad_cam"):
            raise ImportError("libsomething.so: cannot open shared object file")
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", broken)
    reason = bench_gradcam.package_missing()
    assert reason.startswith("the grad-cam package does not import here (ImportError: "
                             "libsomething.so")
    records, md = bench_gradcam.run(torch.device("cpu"), 4, 2, 1)
    assert not any("grad-cam" in r["name"] for r in records) and "gradcam: ours batched" in {
        r["name"] for r in records}
    assert "does not import here" in md
