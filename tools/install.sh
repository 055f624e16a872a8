#!/usr/bin/env bash
# Create .venv (or reuse it) with everything the project, its demos and its tests need.
# Usage: bash tools/install.sh            (idempotent; a second run installs nothing new)
# The torch build: TORCH_INDEX_URL picks PyTorch's wheel index for your CUDA driver and GPUs (docs/gpu.md), e.g.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash tools/install.sh   # CUDA 12.6 (V100 / sm_70 too)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash tools/install.sh     # CPU only
# Unset: pip's default index (its default build). Changing it reinstalls torch / torchvision from that index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
stamp=.venv/.mvit-installed
index=${TORCH_INDEX_URL:-}
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ tools/install.sh -nt "$stamp" ] \
  || [ mvit/data/_affine.c -nt "$stamp" ] || [ "$(cat "$stamp")" != "$index" ]; then
  # torch 2.14.1 / torchvision 0.29.1 are the tested pair.
  if [ -n "$index" ]; then
    $PIP install -q --force-reinstall --no-deps --index-url "$index" "torch==2.14.1" "torchvision==0.29.1"
    $PIP install -q --index-url "$index" --extra-index-url https://pypi.org/simple "torch==2.14.1" "torchvision==0.29.1"
  else
    $PIP install -q "torch==2.14.1" "torchvision==0.29.1"
  fi
  $PIP install -q -e ".[all]"  # the core, every extra (train, video, detection, slurm, export) and dev
  bash tools/install_detectron2.sh .venv/bin/python
  printf '%s' "$index" > "$stamp"  # the index it was installed from: another one reinstalls torch
fi
