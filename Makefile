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

.PHONY: demo test
demo: $(STAMP)
	$(VENV)/bin/vitc train

test: $(STAMP)
	$(VENV)/bin/ruff check vitc tests
	$(VENV)/bin/pytest
