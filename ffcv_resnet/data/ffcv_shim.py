"""FFCV on any Python: ffcv 1.0.2 imports `distutils.log` (pipeline/graph.py, its one use:
`warn`), and Python 3.12 has no distutils. setuptools' own shim provides it where setuptools is
installed; where it is not (a bare interpreter with ffcv on PYTHONPATH, as on the offline GPU
machine), a `distutils.log` whose `warn` is the logging module's stands in. Imported before
every import of ffcv (`distutils_for_ffcv()`)."""
from __future__ import annotations

import importlib
import logging
import sys
import types

STAND_IN = "ffcv_resnet_stand_in"


def distutils_for_ffcv() -> str:
    """Make `from distutils.log import warn` work; say which distutils it found."""
    try:
        import distutils.log  # (the standard library's before Python 3.12, or ours)
        return STAND_IN if getattr(distutils.log, STAND_IN, False) else "distutils"
    except ImportError:
        pass
    try:
        importlib.import_module("setuptools")  # its import installs its distutils shim
        importlib.import_module("distutils.log")
        return "setuptools"
    except ImportError:
        pass
    package, log = types.ModuleType("distutils"), types.ModuleType("distutils.log")
    log.warn = logging.getLogger("ffcv").warning
    setattr(log, STAND_IN, True)
    package.log, package.__path__ = log, []
    sys.modules["distutils"], sys.modules["distutils.log"] = package, log
    return STAND_IN
