# The two set-up commands of the README. Each creates .venv on first use and installs what it needs:
# the pinned CPU torch first (an unpinned one pulls several GB of CUDA packages), then vitc.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitc-installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[torch,onnx,dev]'
	$(PY) -m pip install -q --no-deps tensorrt-stubs  # its dependency is TensorRT itself: types only
	touch $(STAMP)

# Rich tables are 80 columns wide when output is not a terminal; the demo's tables need more.
export COLUMNS ?= 150

.PHONY: demo test gpu-check
# The main job: train on the bundled digits, export FP32/FP16/INT8 ONNX with their drift table, and
# benchmark the three artifacts side by side with their accuracy (ONNX Runtime; `vitc build` makes
# TensorRT engines from the same files where TensorRT is installed).
RUN := export/convit_micro
demo: $(STAMP)
	$(VENV)/bin/vitc train --force
	$(VENV)/bin/vitc export train/runs/convit_micro/best.safetensors -p fp32 -p fp16 -p int8 --dynamic-batch 1:8:32 --force
	$(VENV)/bin/vitc bench -e $(RUN)/model.fp32.onnx -e $(RUN)/model.fp16.onnx -e $(RUN)/model.int8.onnx --data $(RUN) -b 1,8

test: $(STAMP)
	$(VENV)/bin/ruff check vitc tests
	$(VENV)/bin/pytest

# On a lent NVIDIA GPU (CUDA PyTorch, no registry; the venv's CPU torch is not used): benchmarks, CUDA
# training, the CUDA layer and the tensorrt-marked tests in < 8 min -> train/runs/gpu_check/gpu_check.md
# and .json. docs/gpu_check.py says what it needs beyond CUDA PyTorch (WHEELS=dir installs them offline).
PYTHON ?= python3
gpu-check:
	PYTHONPATH=. $(PYTHON) docs/gpu_check.py $(if $(WHEELS),--wheelhouse $(WHEELS))
