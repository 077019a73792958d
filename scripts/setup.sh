#!/usr/bin/env bash
# Idempotent set-up: the system libraries ffcv builds against, then .venv with this package.
# TORCH_SPEC overrides the tested torch pin (e.g. TORCH_SPEC="torch torchvision" for the newest).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

# What building ffcv from source and making .venv need: a C compiler, Python's headers, venv
# with pip, pkg-config and the OpenCV and libjpeg-turbo headers.
need=()
{ command -v cc && command -v c++; } >/dev/null || need+=(build-essential)  # ffcv: C++
"$PYTHON" -c "import sysconfig, os, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" 2>/dev/null \
  || need+=(python3-dev)
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
pkg-config --exists opencv4 libturbojpeg 2>/dev/null || need+=(pkg-config libopencv-dev libturbojpeg0-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need[*]} (ffcv builds from source against them)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: building ffcv needs ${need[*]}; install them first:" >&2
    echo "  sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

# Chromium: only report.html's browser test and explain's report.png use it, so the set-up
# carries on without it (the test then skips, naming what is missing).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium (the report's browser test and screenshot)"
    { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "setup: chromium could not be installed; the browser test will skip" >&2
  else
    echo "setup: no chromium: the browser test skips, explain writes no report.png; add it:" >&2
    echo "  sudo apt-get install chromium" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# .venv/.installed holds the torch spec it was made with: a new TORCH_SPEC reinstalls torch
if [ ! -f .venv/.installed ] || [ setup.py -nt .venv/.installed ] \
    || [ "$(cat .venv/.installed)" != "$TORCH_SPEC" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q $TORCH_SPEC 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, torchvision, ffcv, fastargs, pytorch_grad_cam, playwright, cleanlab, aum" \
    || { echo "setup: installation failed (see pip's output above)" >&2; exit 1; }
  printf '%s' "$TORCH_SPEC" > .venv/.installed
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
