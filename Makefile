# Quick start (fresh machine):   make demo    — set up .venv and run the main job on a small embedded default
#                                make test    — set up .venv and run the test suite
PY := .venv/bin/python

.PHONY: setup demo test lint zoo gpu-check

setup:
	bash tools/install.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff format --check . && .venv/bin/ruff check .

zoo: setup
	$(PY) tools/model_info.py --zoo-table

# One GPU, < 8 min: environment, numerics, kernels, memory, engine, detection, speed (tools/gpu_check.py).
gpu-check: setup
	$(PY) tools/gpu_check.py --out gpu_check.md
