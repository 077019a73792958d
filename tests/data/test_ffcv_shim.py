"""ffcv imports on Python 3.12 without distutils."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_ffcv_imports_without_distutils():
    """Python 3.12 has no distutils and the GPU machine's bare interpreter may lack setuptools:
    with both hidden, ffcv's loader and writer still import through data/ffcv_shim.py."""
    code = ("import sys; sys.modules.update({'distutils': None, 'distutils.log': None, "
            "'setuptools': None})\n"
            "from ffcv_resnet.data.ffcv_shim import distutils_for_ffcv\n"
            "assert distutils_for_ffcv() == 'ffcv_resnet_stand_in'\n"
            "import ffcv.loader, ffcv.writer\n"
            "from distutils.log import warn; print('ok')")
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert bare.stdout.strip() == "ok", bare.stderr[-2000:]
    blocked = subprocess.run([sys.executable, "-c", code.split("\n")[0] + "\nimport ffcv.loader"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert blocked.returncode != 0 and "distutils" in blocked.stderr  # what the shim prevents
