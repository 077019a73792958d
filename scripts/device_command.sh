#!/usr/bin/env bash
# Prints the one command to run scripts/reproduce.py on a lent GPU machine (docs/reproduce.md):
# the machine gets a copy of the working tree without .git, so the command carries this
# checkout's commit in FFCV_RESNET_GIT (with -dirty when its code differs from it). It brings
# back two files in $OUT: the bundle (records, logs, run files) and the console log.
# Usage: bash scripts/device_command.sh [extra reproduce options]
set -euo pipefail
cd "$(dirname "$0")/.."
sha=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -- ffcv_resnet 'benchmarks/*.py' scripts configs)" ]; then
  sha="$sha-dirty"
fi
extra=""
for a in "$@"; do extra="$extra $(printf '%q' "$a")"; done
cat <<CMD
tar xzf .devdeps/site.tar.gz -C /tmp && export PYTHONPATH=/tmp/site:\$PWD PYTHONUNBUFFERED=1 FFCV_RESNET_GIT=$sha && mkdir -p /tmp/cifar && tar xzf .devdeps/cifar10-jpg.tar.gz -C /tmp/cifar && python3 scripts/reproduce.py -C configs/device-call.yaml --data.dir /tmp/data --data.source /tmp/cifar --reproduce.out /tmp/runs --reproduce.results /tmp/results --reproduce.bundle \$OUT/reproduce.tar.gz$extra > \$OUT/console.log 2>&1; echo "exit \$?"; tail -40 \$OUT/console.log
CMD
