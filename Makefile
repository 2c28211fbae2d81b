# The two set-up commands of the README. Each creates .venv on first use and installs what it needs:
# the pinned torch first (an unpinned one pulls the newest, several GB of CUDA packages), then vitc. Which
# build it is depends on the index: PyPI's Linux wheel is the CUDA build (a GPU workstation's); for the CPU
# build elsewhere: make demo TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
VENV ?= .venv
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitc-installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX)
	$(PY) -m pip install -q -e '.[torch,onnx,dev]'
	$(PY) -m pip install -q --no-deps tensorrt-stubs  # its dependency is TensorRT itself: types only
	touch $(STAMP)

.PHONY: demo test gpu-check
# The main job: train on the bundled digits, export FP32/FP16/INT8 ONNX with their drift table, and
# benchmark the three artifacts side by side with their accuracy (ONNX Runtime; `vitc build` makes
# TensorRT engines from the same files where TensorRT is installed).
RUN := export/convit_micro
demo: $(STAMP)
	$(VENV)/bin/vitc train --force
	$(VENV)/bin/vitc export train/runs/convit_micro/best.safetensors -p fp32 -p fp16 -p int8 --dynamic-batch 1:8:32 --force
	$(VENV)/bin/vitc bench -e $(RUN)/model.fp32.onnx -e $(RUN)/model.fp16.onnx -e $(RUN)/model.int8.onnx --data $(RUN) -b 1,8

# The suite runs in two pytest-xdist processes: 776 s -> 532 s on 2 cores (docs/benchmarks.md, "The suite in two
# workers"); TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
test: $(STAMP) runtime-venvs
	$(VENV)/bin/ruff check vitc tests
	$(VENV)/bin/pytest -n $(TEST_WORKERS)
	$(MAKE) --no-print-directory test-runtime

# The torch-free runtime (info, doctor, check, build, bench --engine) on the Pythons of JetPack 5 (3.8)
# and JetPack 6 (3.10), against the strict TensorRT/CUDA fakes. Each interpreter gets its own venv on
# first use (.venv-py38, .venv-py310): vitc without torch, pytest(-xdist), and for the fakes onnx/onnxruntime
# (the newest that install there) on numpy 1.21.6, the oldest numpy onnxruntime accepts. The main
# suite's tests/engines/test_wheel.py installs the wheel it builds into each of them. An interpreter
# that is missing is skipped, loudly.
PYENV_ROOT ?= $(HOME)/.pyenv
RUNTIME_PYTHONS ?= 3.8.18 3.10.13
RUNTIME_TEST_DEPS := pytest pytest-xdist numpy==1.21.6 onnx onnxruntime
# tests/engines is the runtime's (strict-fake TensorRT and CUDA included): all of it but the GPU check's
# torch tables, its resilience tests (Python 3.12 and torch on the lent GPU) and the wheel test, which the main
# suite runs against these venvs.
RUNTIME_TESTS := tests/engines --ignore=tests/engines/test_cuda_gpu_check.py --ignore=tests/engines/test_gpu_check_resilience.py \
	--ignore=tests/engines/test_wheel.py \
	tests/bench/test_cli_bench.py tests/bench/test_timing_report.py \
	tests/test_cli_info.py tests/test_cli_info_folders.py tests/test_cli_check.py tests/test_cli_doctor.py tests/test_cli_models.py tests/test_cli_signals.py tests/test_cli_home.py \
	tests/test_python_versions.py tests/test_errors.py \
	tests/reliability/test_report_outputs.py
# On 3.8 also with JetPack 5's numpy (python3-numpy 1.17.4, what vitc's numpy>=1.17.3 admits) in front:
# the tests that need no onnx/onnxruntime (those need numpy >= 1.21.6).
NUMPY_OLDEST := 1.17.4
NUMPY_OLDEST_TESTS := tests/engines/test_numpy_oldest.py tests/engines/test_cuda.py tests/bench/test_timing_report.py
# For each runtime Python: `$(call each_runtime,COMMAND)` runs COMMAND with $$py (the interpreter) and
# $$venv (its venv) set, or says loudly that the interpreter is missing.
each_runtime = for v in $(RUNTIME_PYTHONS); do \
		py=$(PYENV_ROOT)/versions/$$v/bin/python; venv=.venv-py$$(echo $$v | cut -d. -f1,2 | tr -d .); \
		if [ ! -x $$py ]; then echo "!!! SKIPPED: the runtime tests on Python $$v ($$py is missing)" >&2; continue; fi; \
		$(1) || exit 1; \
	done

.PHONY: runtime-venvs test-runtime
runtime-venvs:
	@$(call each_runtime,$(MAKE) --no-print-directory $$venv/.vitc-runtime RUNTIME_PY=$$py)

test-runtime: runtime-venvs
	@$(call each_runtime,echo "== the torch-free runtime on Python $$v" && $$venv/bin/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) $(RUNTIME_TESTS) \
		&& if [ -d $$venv/numpy-oldest ]; then echo "== Python $$v with numpy $(NUMPY_OLDEST)" \
		&& VITC_NUMPY_OLDEST=$(NUMPY_OLDEST) PYTHONPATH=$$venv/numpy-oldest $$venv/bin/python -m pytest -p no:cacheprovider $(NUMPY_OLDEST_TESTS); fi)

.venv-py%/.vitc-runtime: pyproject.toml
	rm -rf .venv-py$*
	$(RUNTIME_PY) -m venv .venv-py$*
	.venv-py$*/bin/python -m pip install -q --upgrade pip
	.venv-py$*/bin/python -m pip install -q -e . $(RUNTIME_TEST_DEPS)
	if [ $* = 38 ]; then .venv-py$*/bin/python -m pip install -q --no-deps --only-binary=:all: \
		--target .venv-py$*/numpy-oldest numpy==$(NUMPY_OLDEST); fi
	touch $@

# The suite on another torch, by default the lent H200's 2.11 (torch 2.11's dynamo and export differ from
# 2.13's: a graph break and a refused export were found this way). Its CUDA build runs on the CPU here;
# the first install fetches about 3 GB. TORCH_PY: the Python for it (the H200 has 3.12).
TORCH ?= 2.11.0
TORCH_PY ?= python3
.PHONY: test-torch
test-torch:
	test -x .venv-torch$(TORCH)/bin/python || $(TORCH_PY) -m venv .venv-torch$(TORCH)
	.venv-torch$(TORCH)/bin/python -m pip install -q torch==$(TORCH)
	.venv-torch$(TORCH)/bin/python -m pip install -q -e '.[torch,onnx,dev]'
	.venv-torch$(TORCH)/bin/python -m pip install -q --no-deps tensorrt-stubs
	.venv-torch$(TORCH)/bin/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS)

# On a lent NVIDIA GPU (CUDA PyTorch, no registry; the venv's CPU torch is not used): benchmarks, CUDA
# training, the CUDA layer and the tensorrt-marked tests in ~8 min -> train/runs/gpu_check/gpu_check.md
# and .json (in $OUT where that is set, as on the device tool's machines). docs/gpu_check.py says what it
# needs beyond CUDA PyTorch (WHEELS=dir installs them offline) and how to run it through the device tool.
PYTHON ?= python3
gpu-check:
	PYTHONPATH=. $(PYTHON) docs/gpu_check.py $(if $(WHEELS),--wheelhouse $(WHEELS)) $(if $(OUT),--report-dir $(OUT))
