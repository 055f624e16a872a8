#!/usr/bin/env bash
# Create .venv (or reuse it) with everything the project, its demos and its tests need.
# Usage: bash tools/install.sh            (idempotent; a second run installs nothing new)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
stamp=.venv/.mvit-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ tools/install.sh -nt "$stamp" ] \
  || [ mvit/data/_affine.c -nt "$stamp" ]; then
  # torch 2.14.1 / torchvision 0.29.1 are the tested pair (pinned on this machine's local index).
  $PIP install -q "torch==2.14.1" "torchvision==0.29.1"
  $PIP install -q -e ".[all]"  # the core, every extra (train, video, detection, slurm, export) and dev
  bash tools/install_detectron2.sh .venv/bin/python
  touch "$stamp"
fi
